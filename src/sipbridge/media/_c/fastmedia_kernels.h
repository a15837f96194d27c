/* The media path's arithmetic kernels in plain C: G.711 μ-law and A-law, and the 1:3 and
 * 3:1 polyphase FIR between 8 and 24 kHz, each giving exactly what the Python reference
 * gives (sipbridge/media/g711.py, sipbridge/media/resample.py) for the same input.
 *
 * No allocation, no Python: state is a fixed-size struct the caller owns, buffers are the
 * caller's, lengths are sample counts. The definitions are in kernels/fastmedia_kernels.c;
 * another extension module uses them by compiling that file with its own sources (a .c
 * file in its folder holding `#include "kernels/fastmedia_kernels.c"` does, as
 * src/sipbridge/media/_c is on the include path).
 */
#ifndef FASTMEDIA_KERNELS_H
#define FASTMEDIA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- G.711 (ITU-T G.711, as the G.191 reference g711.c) -------------------------- */

uint8_t fm_ulaw_encode1(int16_t x);
int16_t fm_ulaw_decode1(uint8_t code);
uint8_t fm_alaw_encode1(int16_t x);
int16_t fm_alaw_decode1(uint8_t code);

/* n samples in, n octets out (and back). */
void fm_ulaw_encode(const int16_t *in, uint8_t *out, size_t n);
void fm_ulaw_decode(const uint8_t *in, int16_t *out, size_t n);
void fm_alaw_encode(const int16_t *in, uint8_t *out, size_t n);
void fm_alaw_decode(const uint8_t *in, int16_t *out, size_t n);

/* ---- The 1:3 and 3:1 FIR (8 <-> 24 kHz) --------------------------------------------
 * A 72-tap low-pass at 24 kHz in Q15. Each output sample is the exact integer sum of
 * taps times samples (it stays below 2**31 in magnitude: every branch's absolute tap sum
 * times 32768, plus the rounding half), rounded as (sum + (1 << 14)) >> 15 and
 * saturated to int16. */

#define FM_FIR_TAPS 72
#define FM_FIR_SHIFT 15
#define FM_UP_HISTORY 23   /* 8 kHz samples the 1:3 filter keeps from before */
#define FM_DOWN_HISTORY 71 /* 24 kHz samples the 3:1 filter keeps from before */

/* The taps in the order a window of samples, oldest first, meets them: the 3:1 filter's
 * 72 (resample.TAPS_DOWN reversed), and the 1:3 filter's three polyphase branches of 24
 * (branch p, resample.TAPS_UP[p::3] reversed, makes output samples 3m + p). */
extern const int16_t fm_down_taps[FM_FIR_TAPS];
extern const int16_t fm_up_taps[3][FM_UP_HISTORY + 1];

/* 1:3 (8 -> 24 kHz). Zeroed state is a stream that starts in silence. */
typedef struct {
    int16_t history[FM_UP_HISTORY];
} fm_up3;

/* 3:1 (24 -> 8 kHz): `carry` holds the 0..2 input samples short of a multiple of 3,
 * which wait for the next chunk. Zeroed state is a stream that starts in silence. */
typedef struct {
    int16_t history[FM_DOWN_HISTORY];
    int16_t carry[2];
    uint8_t carried;
} fm_down3;

void fm_up3_init(fm_up3 *s);
/* n samples in, exactly 3 * n out. */
void fm_up3_process(fm_up3 *s, const int16_t *in, size_t n, int16_t *out);

void fm_down3_init(fm_down3 *s);
/* How many samples fm_down3_process gives for n in: (carried + n) / 3. */
size_t fm_down3_out_len(const fm_down3 *s, size_t n);
/* n samples in, fm_down3_out_len(s, n) out (returned). */
size_t fm_down3_process(fm_down3 *s, const int16_t *in, size_t n, int16_t *out);

#endif
