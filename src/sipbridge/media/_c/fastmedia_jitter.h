/* The adaptive jitter buffer of sipbridge.media.jitterbuffer, as plain C on one struct.

   The same algorithm, state and counters as the Python reference (read its module
   docstring for the policy): the same double operations in the same order on arrival
   times, so that every decision is the same; integers in int64_t where Python has
   unbounded ints (slots, counters: far from overflow for any stream a call can carry).

   The struct has a fixed size: the queue and the late frames live in a trailing array
   sized once by the window (`fm_jitter_size`), never grown: nothing is allocated per
   packet. The queue never holds more than 3 windows of frames (a step back over
   concealed slots can leave frames filed before it beyond the window), the late frames
   fewer than one window. Payloads are opaque pointers: a put that returns 1 hands its
   payload to the buffer, which gives it back through `release` when it drops it (a skip,
   a flush) or through `fm_jitter_get`.

   Domain: `now` finite and within +-FM_JITTER_MAX_TIME (seconds of a monotonic clock);
   sequence and timestamp are the packet's 16- and 32-bit fields. */

#ifndef FASTMEDIA_JITTER_H
#define FASTMEDIA_JITTER_H

#include <stddef.h>
#include <stdint.h>

#define FM_JITTER_WINDOW 256      /* jitter samples behind the percentile */
#define FM_JITTER_HISTORY 64      /* played slots remembered */
#define FM_JITTER_MAX_SLOTS 1000  /* max_delay_ms // frame_ms accepted */
#define FM_JITTER_MAX_TIME 1e12   /* |now| accepted, seconds */

typedef void (*fm_jitter_release)(void *ctx, void *payload);

typedef struct {
    int64_t slot;
    void *payload;
    uint16_t sequence;
} fm_jitter_item;

typedef struct {
    int64_t frame_ms, clock_rate, min_delay_ms, max_delay_ms, initial_delay_ms;
} fm_jitter_config;

/* What fm_jitter_get yields. */
enum { FM_JITTER_BUFFERING = 0, FM_JITTER_LOST = 1, FM_JITTER_FRAME = 2 };

typedef struct {
    /* configuration */
    double frame, min, max, initial;
    int64_t frame_ms, spf, window;
    /* counters, as the Python attributes of the same names */
    int64_t received, late, duplicates, reordered, overflow;
    int64_t played, concealed, restarts, skipped, stalled;
    /* the stream */
    int has_base, has_probe, started;
    uint16_t probe_seq;
    uint32_t probe_ts;
    int64_t base, ts_ref, seq_ref, next, run;
    /* the queue (items[0..qlen)) and the late frames (items[qcap..qcap+llen)) */
    int64_t qlen, qcap, llen;
    /* played slots, oldest first: a ring */
    int64_t history[FM_JITTER_HISTORY];
    int hhead, hlen;
    /* the transit minima (arrival, transit), rising: a ring */
    double min_arrival[FM_JITTER_WINDOW], min_transit[FM_JITTER_WINDOW];
    int mhead, mlen;
    /* the jitter samples and the estimate */
    double jitter[FM_JITTER_WINDOW];
    int64_t samples, since_skip;
    double estimate, hold, hold_until, now;
    fm_jitter_release release;
    void *release_ctx;
    fm_jitter_item items[];
} fm_jitter;

/* NULL if the configuration is valid (and *window its slot count), else why not. */
const char *fm_jitter_check(const fm_jitter_config *config, int64_t *window);
/* Bytes for a buffer of that window. */
size_t fm_jitter_size(int64_t window);
/* Sets up a checked configuration in memory of fm_jitter_size(window) bytes. */
void fm_jitter_init(fm_jitter *jb, const fm_jitter_config *config, fm_jitter_release release,
                    void *release_ctx);
/* Releases every payload held (the buffer stays usable, as after a new stream). */
void fm_jitter_clear(fm_jitter *jb);

/* 1: filed (the buffer owns the payload now), 0: dropped, -1: outside the domain. */
int fm_jitter_put(fm_jitter *jb, uint16_t sequence, uint32_t timestamp, void *payload, double now);
/* FM_JITTER_BUFFERING, FM_JITTER_LOST or FM_JITTER_FRAME (*out filled, the caller owns
   its payload); -1: outside the domain. */
int fm_jitter_get(fm_jitter *jb, double now, fm_jitter_item *out);
int fm_jitter_ready(const fm_jitter *jb, double now);
/* 0, or -1 if that clock rate gives no whole number of samples per frame. */
int fm_jitter_set_clock_rate(fm_jitter *jb, int64_t clock_rate);
double fm_jitter_delay_ms(const fm_jitter *jb);
int64_t fm_jitter_clock_rate(const fm_jitter *jb);
int64_t fm_jitter_played_held(const fm_jitter *jb);

/* What sipbridge.media._jitter lends other extension modules, as the capsule
   "sipbridge.media._jitter._C_API": its JitterBuffer type, and that type's put (the
   method's checks and outcome: 1 filed, 0 dropped, -1 with the exception set; the
   caller keeps its reference to the payload). */
#ifdef Py_PYTHON_H
#define FM_JITTER_CAPSULE "sipbridge.media._jitter._C_API"
typedef struct {
    PyTypeObject *type;
    int (*put)(PyObject *jitter, uint16_t sequence, uint32_t timestamp, PyObject *payload,
               double now);
} fm_jitter_api;
#endif

#endif
