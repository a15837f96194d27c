/* G.711 and the 1:3 / 3:1 FIR: see fastmedia_kernels.h. Each function follows its Python
 * reference step by step (named in its comment); tests/unit/test_kernels_exact.py holds
 * the two to the same output. */

#include "fastmedia_kernels.h"

#include <string.h>

/* ---- G.711 --------------------------------------------------------------------------- */

static inline int bit_length(uint32_t v)
{
    return v ? 32 - __builtin_clz(v) : 0;
}

/* g711._ulaw_encode_table: a negative sample is read by its one's complement (G.191). */
uint8_t fm_ulaw_encode1(int16_t x)
{
    int magnitude = x < 0 ? ~x : x;
    int biased = (magnitude >> 2) < 0x1FFF - 33 ? (magnitude >> 2) + 33 : 0x1FFF;
    int exponent = bit_length((uint32_t)(biased >> 6));
    int mantissa = (biased >> (exponent + 1)) & 0x0F;
    int code = ~((exponent << 4) | mantissa) & 0x7F; /* μ-law sends every bit inverted */
    return (uint8_t)(code | (x >= 0 ? 0x80 : 0));
}

/* g711._ulaw_decode_table */
int16_t fm_ulaw_decode1(uint8_t code)
{
    int inverted = ~code & 0xFF;
    int exponent = (inverted >> 4) & 0x07;
    int mantissa = inverted & 0x0F;
    int step = 8 << exponent;
    int magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    return (int16_t)(code & 0x80 ? magnitude : -magnitude);
}

/* g711._alaw_encode_table */
uint8_t fm_alaw_encode1(int16_t x)
{
    int magnitude = (x < 0 ? ~x : x) >> 4; /* 0..2047 */
    int exponent = bit_length((uint32_t)magnitude) - 4;
    if (exponent < 0)
        exponent = 0; /* segments 0 and 1 share a step */
    int mantissa = exponent == 0 ? magnitude : magnitude >> (exponent - 1);
    int code = (exponent << 4) | (mantissa & 0x0F);
    return (uint8_t)((code | (x >= 0 ? 0x80 : 0)) ^ 0x55); /* even bits inverted */
}

/* g711._alaw_decode_table */
int16_t fm_alaw_decode1(uint8_t code)
{
    int plain = (code ^ 0x55) & 0x7F;
    int exponent = plain >> 4;
    int mantissa = (plain & 0x0F) + (exponent > 0 ? 16 : 0); /* the implied leading 1 */
    int magnitude = ((mantissa << 4) + 8) << (exponent > 0 ? exponent - 1 : 0);
    return (int16_t)(code & 0x80 ? magnitude : -magnitude);
}

void fm_ulaw_encode(const int16_t *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = fm_ulaw_encode1(in[i]);
}

void fm_ulaw_decode(const uint8_t *in, int16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = fm_ulaw_decode1(in[i]);
}

void fm_alaw_encode(const int16_t *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = fm_alaw_encode1(in[i]);
}

void fm_alaw_decode(const uint8_t *in, int16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = fm_alaw_decode1(in[i]);
}

/* ---- The 1:3 and 3:1 FIR ------------------------------------------------------------- */

/* The taps in the order a window of samples (oldest first) meets them: the low-pass in
 * Q15 reversed, summing to exactly 1 << 15 (resample.TAPS_DOWN reversed), and for the
 * 1:3 filter three times the low-pass, branch p's taps last first, each branch summing
 * to 1 << 15 (resample.TAPS_UP[p::3] reversed). */
const int16_t fm_down_taps[FM_FIR_TAPS] = {
         0,      3,      5,      1,     -9,    -15,     -6,     18,     37,     24,    -25,    -72,
       -62,     21,    120,    132,      7,   -176,   -244,    -82,    225,    408,    232,   -244,
      -633,   -505,    191,    944,    999,     19,  -1432,  -2064,   -711,   2707,   6865,   9706,
      9706,   6865,   2707,   -711,  -2064,  -1432,     19,    999,    944,    191,   -505,   -633,
      -244,    232,    408,    225,    -82,   -244,   -176,      7,    132,    120,     21,    -62,
       -72,    -25,     24,     37,     18,     -6,    -15,     -9,      1,      5,      3,      0,
};

const int16_t fm_up_taps[3][FM_UP_HISTORY + 1] = {
    {
         14,    -46,    110,   -216,    361,   -528,    676,   -732,    574,     56,  -2132,  29119,
       8120,  -4296,   2832,  -1900,   1224,   -733,    397,   -187,     72,    -19,      1,      1,
    },
    {
          9,    -27,     53,    -74,     64,     22,   -246,    697,  -1515,   2997,  -6191,  20595,
      20595,  -6191,   2997,  -1515,    697,   -246,     22,     64,    -74,     53,    -27,      9,
    },
    {
          1,      1,    -19,     72,   -187,    397,   -733,   1224,  -1900,   2832,  -4296,   8120,
      29119,  -2132,     56,    574,   -732,    676,   -528,    361,   -216,    110,    -46,     14,
    },
};

/* resample._round. The sum fits int32 (see the header); >> of a negative int is
 * arithmetic in GCC and Clang, as numpy's. */
static inline int16_t fir_round(int32_t sum)
{
    int32_t y = (sum + (1 << (FM_FIR_SHIFT - 1))) >> FM_FIR_SHIFT;
    return (int16_t)(y > 32767 ? 32767 : y < -32768 ? -32768 : y);
}

static inline int32_t dot_up(const int16_t *window, const int16_t *taps)
{
    int32_t sum = 0;
    for (int j = 0; j < FM_UP_HISTORY + 1; j++)
        sum += (int32_t)window[j] * taps[j];
    return sum;
}

static inline int32_t dot_down(const int16_t *window)
{
    int32_t sum = 0;
    for (int t = 0; t < FM_FIR_TAPS; t++)
        sum += (int32_t)window[t] * fm_down_taps[t];
    return sum;
}

static inline void up_three(const int16_t *window, int16_t *out)
{
    out[0] = fir_round(dot_up(window, fm_up_taps[0]));
    out[1] = fir_round(dot_up(window, fm_up_taps[1]));
    out[2] = fir_round(dot_up(window, fm_up_taps[2]));
}

void fm_up3_init(fm_up3 *s)
{
    memset(s, 0, sizeof *s);
}

/* resample.Resampler._up: output samples 3m..3m+2 come from the window of input samples
 * m - 23 .. m (before the chunk: the history). */
void fm_up3_process(fm_up3 *s, const int16_t *in, size_t n, int16_t *out)
{
    /* The first windows reach into the history: (history, in) copied side by side. */
    int16_t head[FM_UP_HISTORY * 2];
    size_t lead = n < FM_UP_HISTORY ? n : FM_UP_HISTORY;
    memcpy(head, s->history, sizeof s->history);
    memcpy(head + FM_UP_HISTORY, in, lead * sizeof *in);
    for (size_t m = 0; m < lead; m++)
        up_three(head + m, out + 3 * m);
    for (size_t m = FM_UP_HISTORY; m < n; m++)
        up_three(in + m - FM_UP_HISTORY, out + 3 * m);
    /* The last 23 samples of (history, in). */
    if (n >= FM_UP_HISTORY) {
        memcpy(s->history, in + n - FM_UP_HISTORY, sizeof s->history);
    } else {
        memmove(s->history, s->history + n, (FM_UP_HISTORY - n) * sizeof *in);
        memcpy(s->history + FM_UP_HISTORY - n, in, n * sizeof *in);
    }
}

void fm_down3_init(fm_down3 *s)
{
    memset(s, 0, sizeof *s);
}

size_t fm_down3_out_len(const fm_down3 *s, size_t n)
{
    return (s->carried + n) / 3;
}

/* resample.Resampler._down: the stream is (carry, in); output sample m comes from the
 * window of 72 samples ending at stream sample 3m + 2 (before the stream: the history).
 * What is short of a multiple of 3 is carried to the next chunk. */
size_t fm_down3_process(fm_down3 *s, const int16_t *in, size_t n, int16_t *out)
{
    size_t carried = s->carried;
    size_t total = carried + n;
    size_t usable = total - total % 3;
    size_t count = usable / 3;
#define STREAM(i) ((i) < carried ? s->carry[(i)] : in[(i) - carried])
    /* The first 24 windows reach into the history (or the carry): (history, stream)
     * copied side by side; the rest lie in `in` alone. */
    int16_t head[FM_DOWN_HISTORY + FM_FIR_TAPS];
    size_t lead = usable < FM_FIR_TAPS ? usable : FM_FIR_TAPS;
    memcpy(head, s->history, sizeof s->history);
    for (size_t i = 0; i < lead; i++)
        head[FM_DOWN_HISTORY + i] = STREAM(i);
    size_t head_count = count < FM_FIR_TAPS / 3 ? count : FM_FIR_TAPS / 3;
    for (size_t m = 0; m < head_count; m++)
        out[m] = fir_round(dot_down(head + 3 * m + 2));
    /* Window m starts at stream sample 3m + 2 - 71, at or after in[0] from m = 24. */
    for (size_t m = head_count; m < count; m++)
        out[m] = fir_round(dot_down(in + 3 * m + 2 - FM_DOWN_HISTORY - carried));
    /* The new history: the last 71 samples of (history, stream[:usable]); the new carry:
     * stream[usable:]. Both are read before either is written. */
    int16_t history[FM_DOWN_HISTORY];
    for (size_t i = 0; i < FM_DOWN_HISTORY; i++) {
        size_t at = usable + i; /* in (history, stream) */
        history[i] = at < FM_DOWN_HISTORY ? s->history[at] : STREAM(at - FM_DOWN_HISTORY);
    }
    int16_t carry[2] = {0, 0};
    for (size_t i = usable; i < total; i++)
        carry[i - usable] = STREAM(i);
#undef STREAM
    memcpy(s->history, history, sizeof history);
    memcpy(s->carry, carry, sizeof carry);
    s->carried = (uint8_t)(total - usable);
    return count;
}
