/* The adaptive jitter buffer: sipbridge/media/jitterbuffer.py line for line (see
   fastmedia_jitter.h). Python's max(a, b) keeps a unless b > a, min(a, b) keeps a unless
   b < a: PYMAX and PYMIN do the same, so that even the sign of a zero follows. */

#include "fastmedia_jitter.h"

#include <math.h>
#include <string.h>

#define QUANTILE 0.99
#define GUARD 1.125
#define RECOMPUTE 16
#define WARMUP 50
#define MIN_SPAN 2.0
#define LATE_HOLD 5.0
#define SHRINK_EVERY 50
#define HYSTERESIS 1.05
#define BEHIND 50
#define EPS 1e-6
#define TOP 8 /* the percentile's rank from the top: at most 3 for 256 samples */

#define PYMAX(a, b) ((b) > (a) ? (b) : (a))
#define PYMIN(a, b) ((b) < (a) ? (b) : (a))

const char *fm_jitter_check(const fm_jitter_config *c, int64_t *window) {
    if (c->frame_ms <= 0 || c->clock_rate <= 0 || c->frame_ms > 1000000
        || c->clock_rate > 100000000 || c->clock_rate * c->frame_ms % 1000)
        return "frame_ms and clock_rate must give a whole number of samples";
    if (c->max_delay_ms > 1000000000 || c->max_delay_ms < -1000000000
        || !(0 <= c->min_delay_ms && c->min_delay_ms <= c->max_delay_ms - c->frame_ms))
        return "need 0 <= min_delay_ms <= max_delay_ms - frame_ms";
    *window = c->max_delay_ms / c->frame_ms;
    if (*window > FM_JITTER_MAX_SLOTS)
        return "max_delay_ms // frame_ms must be at most 1000";
    return NULL;
}

size_t fm_jitter_size(int64_t window) {
    return sizeof(fm_jitter) + (size_t)(4 * window) * sizeof(fm_jitter_item);
}

static void reset_stream(fm_jitter *jb);

void fm_jitter_init(fm_jitter *jb, const fm_jitter_config *c, fm_jitter_release release,
                    void *release_ctx) {
    int64_t window = c->max_delay_ms / c->frame_ms;
    memset(jb, 0, sizeof(fm_jitter));
    jb->release = release;
    jb->release_ctx = release_ctx;
    jb->frame = (double)c->frame_ms / 1000;
    jb->frame_ms = c->frame_ms;
    jb->spf = c->clock_rate * c->frame_ms / 1000;
    jb->window = window;
    jb->qcap = 3 * window;
    jb->min = (double)c->min_delay_ms / 1000;
    jb->max = (double)(c->max_delay_ms - c->frame_ms) / 1000;
    double initial = (double)c->initial_delay_ms / 1000;
    jb->initial = PYMIN(PYMAX(initial, jb->min), jb->max);
    jb->estimate = 0.0;
    jb->hold = 0.0;
    jb->hold_until = -INFINITY;
    jb->now = 0.0;
    reset_stream(jb);
}

static void release(fm_jitter *jb, void *payload) {
    if (jb->release)
        jb->release(jb->release_ctx, payload);
}

/* Python's floor division of ints, for b > 0. */
static int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if (a % b != 0 && a < 0)
        q -= 1;
    return q;
}

/* The extended counter nearest `ref` whose low `bits` are `value` (RFC 3550 A.1). */
static int64_t unwrap(int64_t value, int64_t ref, int bits) {
    uint64_t half = (uint64_t)1 << (bits - 1), mask = ((uint64_t)1 << bits) - 1;
    uint64_t d = ((uint64_t)value - (uint64_t)ref + half) & mask;
    return ref + (int64_t)d - (int64_t)half;
}

/* Python's float floor division (CPython's _float_div_mod), for finite a, b != 0. */
static double py_floordiv(double vx, double wx) {
    double mod = fmod(vx, wx), div = (vx - mod) / wx, floordiv;
    if (mod) {
        if ((wx < 0) != (mod < 0))
            div -= 1.0;
    }
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5)
            floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    return floordiv;
}

static int64_t qfind(const fm_jitter *jb, int64_t slot) {
    for (int64_t i = 0; i < jb->qlen; i++)
        if (jb->items[i].slot == slot)
            return i;
    return -1;
}

static int64_t lfind(const fm_jitter *jb, int64_t slot) {
    const fm_jitter_item *late = jb->items + jb->qcap;
    for (int64_t i = 0; i < jb->llen; i++)
        if (late[i].slot == slot)
            return i;
    return -1;
}

static void qremove(fm_jitter *jb, int64_t i) {
    jb->items[i] = jb->items[--jb->qlen];
}

static void late_clear(fm_jitter *jb) {
    fm_jitter_item *late = jb->items + jb->qcap;
    int64_t n = jb->llen;
    jb->llen = 0;
    for (int64_t i = 0; i < n; i++)
        release(jb, late[i].payload);
}

static int played(const fm_jitter *jb, int64_t slot) {
    for (int i = 0; i < jb->hlen; i++)
        if (jb->history[(jb->hhead + i) % FM_JITTER_HISTORY] == slot)
            return 1;
    return 0;
}

static void remember(fm_jitter *jb, int64_t slot) {
    if (jb->hlen == FM_JITTER_HISTORY) { /* the oldest goes, as Python's popleft */
        jb->hhead = (jb->hhead + 1) % FM_JITTER_HISTORY;
        jb->hlen--;
    }
    jb->history[(jb->hhead + jb->hlen) % FM_JITTER_HISTORY] = slot;
    jb->hlen++;
}

static void reset_stream(fm_jitter *jb) {
    jb->has_base = 0;
    jb->has_probe = 0;
    jb->ts_ref = jb->seq_ref = jb->next = 0;
    jb->started = 0;
    int64_t n = jb->qlen;
    jb->qlen = 0;
    for (int64_t i = 0; i < n; i++)
        release(jb, jb->items[i].payload);
    late_clear(jb);
    jb->run = 0;
    jb->hhead = jb->hlen = 0;
    jb->mhead = jb->mlen = 0;
}

void fm_jitter_clear(fm_jitter *jb) {
    reset_stream(jb);
}

/* The rank-th smallest of xs[0..n) (nearest rank: rank = ceil(q n) - 1, near the top),
   found as the (n - rank)-th largest. Equal values are the same double (no NaN: `now` is
   finite), so this is numpy.partition's pick. */
static double nth(const double *xs, int64_t n, int64_t rank) {
    double top[TOP]; /* the k largest so far, falling */
    int64_t k = n - rank, have = 0;
    if (k > TOP) /* not for n <= 256 and q = 0.99 */
        k = TOP;
    for (int64_t i = 0; i < n; i++) {
        double v = xs[i];
        int64_t j;
        if (have < k)
            j = have++;
        else if (v > top[k - 1])
            j = k - 1;
        else
            continue;
        while (j > 0 && v > top[j - 1]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = v;
    }
    return top[k - 1];
}

/* Records one transit sample and returns its jitter (RFC 3550 6.4.1, as a spread). */
static double observe(fm_jitter *jb, int64_t slot, double now) {
    double transit = now - (double)slot * jb->frame;
    const int W = FM_JITTER_WINDOW;
    while (jb->mlen && jb->min_transit[(jb->mhead + jb->mlen - 1) % W] >= transit)
        jb->mlen--;
    if (jb->mlen == W) { /* Python appends then pops the 257th from the left: the same */
        jb->mhead = (jb->mhead + 1) % W;
        jb->mlen--;
    }
    int at = (jb->mhead + jb->mlen) % W;
    jb->min_arrival[at] = now;
    jb->min_transit[at] = transit;
    jb->mlen++;
    while (jb->min_arrival[jb->mhead] < now - MIN_SPAN) { /* never the one just added */
        jb->mhead = (jb->mhead + 1) % W;
        jb->mlen--;
    }
    double jitter = transit - jb->min_transit[jb->mhead];
    jb->jitter[jb->samples % W] = jitter;
    jb->samples++;
    if (jb->samples % RECOMPUTE == 0 || jb->samples == WARMUP) {
        int64_t n = jb->samples < W ? jb->samples : W;
        int64_t rank = (int64_t)ceil(QUANTILE * (double)n) - 1;
        jb->estimate = nth(jb->jitter, n, rank) * GUARD;
    }
    return jitter;
}

static double target(const fm_jitter *jb) {
    double target = jb->estimate;
    if (jb->samples < WARMUP)
        target = PYMAX(target, jb->initial);
    if (jb->now < jb->hold_until)
        target = PYMAX(target, jb->hold);
    return PYMIN(PYMAX(target, jb->min), jb->max);
}

double fm_jitter_delay_ms(const fm_jitter *jb) {
    return target(jb) * 1000;
}

int64_t fm_jitter_clock_rate(const fm_jitter *jb) {
    return jb->spf * 1000 / jb->frame_ms;
}

int64_t fm_jitter_played_held(const fm_jitter *jb) {
    return jb->hlen; /* played slots only rise within a stream: no slot twice */
}

int fm_jitter_set_clock_rate(fm_jitter *jb, int64_t clock_rate) {
    if (clock_rate <= 0 || clock_rate > 100000000 || clock_rate * jb->frame_ms % 1000)
        return -1;
    if (clock_rate * jb->frame_ms / 1000 != jb->spf) {
        jb->spf = clock_rate * jb->frame_ms / 1000;
        reset_stream(jb);
    }
    return 0;
}

static int in_domain(double now) {
    return isfinite(now) && fabs(now) <= FM_JITTER_MAX_TIME;
}

static int file(fm_jitter *jb, uint16_t sequence, uint32_t timestamp, void *payload, double now);

static int out_of_window(fm_jitter *jb, uint16_t sequence, uint32_t timestamp, void *payload,
                         double now) {
    jb->overflow++;
    int had = jb->has_probe;
    uint16_t probe_seq = jb->probe_seq;
    uint32_t probe_ts = jb->probe_ts;
    jb->has_probe = 1;
    jb->probe_seq = sequence;
    jb->probe_ts = timestamp;
    if (!had || sequence != ((probe_seq + 1) & 0xFFFF))
        return 0;
    int64_t step = (int64_t)((uint32_t)(timestamp - probe_ts));
    if (!(0 < step && step <= jb->window * jb->spf))
        return 0;
    jb->overflow--; /* it starts the new stream instead */
    jb->restarts++;
    reset_stream(jb);
    return file(jb, sequence, timestamp, payload, now);
}

static int file(fm_jitter *jb, uint16_t sequence, uint32_t timestamp, void *payload, double now) {
    if (!jb->has_base) {
        jb->has_base = 1;
        jb->base = jb->ts_ref = timestamp;
        jb->seq_ref = sequence;
    }
    int64_t ts = unwrap(timestamp, jb->ts_ref, 32);
    int64_t seq = unwrap(sequence, jb->seq_ref, 16);
    int64_t slot = floordiv(ts - jb->base + jb->spf / 2, jb->spf);
    int64_t ahead = slot - jb->next;
    if (ahead >= jb->window || ahead < -BEHIND)
        return out_of_window(jb, sequence, timestamp, payload, now);
    jb->has_probe = 0;
    if (qfind(jb, slot) >= 0 || played(jb, slot) || lfind(jb, slot) >= 0) {
        jb->duplicates++;
        return 0;
    }
    if (seq < jb->seq_ref)
        jb->reordered++;
    jb->seq_ref = PYMAX(jb->seq_ref, seq);
    jb->ts_ref = PYMAX(jb->ts_ref, ts);
    double jitter = observe(jb, slot, now);
    if (ahead < 0) {
        if (jb->started) {
            jb->late++;
            if (now >= jb->hold_until)
                jb->hold = 0.0;
            jb->hold = PYMAX(jb->hold, jitter * GUARD);
            jb->hold_until = now + LATE_HOLD;
            if (slot < jb->next - jb->run || jb->qlen + jb->llen >= jb->window)
                return 0;
            fm_jitter_item *late = jb->items + jb->qcap;
            late[jb->llen++] = (fm_jitter_item){slot, payload, sequence};
            return 1; /* `get` may yet step back to it */
        }
        int64_t top = slot;
        if (jb->qlen) {
            top = jb->items[0].slot;
            for (int64_t i = 1; i < jb->qlen; i++)
                top = PYMAX(top, jb->items[i].slot);
        }
        if (top - slot >= jb->window) {
            jb->overflow++;
            return 0;
        }
        jb->next = slot; /* not playing yet: the stream may begin earlier */
    }
    if (jb->qlen >= jb->qcap) /* cannot happen (see the header); never out of bounds */
        return -1;
    jb->items[jb->qlen++] = (fm_jitter_item){slot, payload, sequence};
    return 1;
}

int fm_jitter_put(fm_jitter *jb, uint16_t sequence, uint32_t timestamp, void *payload, double now) {
    if (!in_domain(now))
        return -1;
    jb->received++;
    jb->now = now;
    return file(jb, sequence, timestamp, payload, now);
}

int fm_jitter_ready(const fm_jitter *jb, double now) {
    if (!jb->mlen || qfind(jb, jb->next) < 0)
        return 0;
    double excess = now - jb->min_transit[jb->mhead] - target(jb) - (double)jb->next * jb->frame;
    return -EPS <= excess && excess < HYSTERESIS * jb->frame;
}

int fm_jitter_get(fm_jitter *jb, double now, fm_jitter_item *out) {
    if (!in_domain(now))
        return -1;
    jb->now = now;
    if (!jb->mlen)
        return FM_JITTER_BUFFERING;
    double frame = jb->frame;
    double excess = now - jb->min_transit[jb->mhead] - target(jb) - (double)jb->next * frame;
    if (excess < -EPS && jb->started && jb->llen) { /* grow over concealed slots */
        double steps = ceil(-excess / frame - EPS);
        int64_t need = steps < (double)jb->run ? (int64_t)steps : jb->run;
        fm_jitter_item *late = jb->items + jb->qcap;
        int64_t first = 0, back = 0;
        for (int64_t i = 0; i < jb->llen; i++)
            if (late[i].slot >= jb->next - need && (!back++ || late[i].slot < first))
                first = late[i].slot;
        if (back) {
            excess += (double)(jb->next - first) * frame;
            jb->next = first;
            int64_t n = jb->llen;
            jb->llen = 0;
            for (int64_t i = 0; i < n; i++) {
                if (late[i].slot >= first && jb->qlen < jb->qcap)
                    jb->items[jb->qlen++] = late[i];
                else
                    release(jb, late[i].payload);
            }
            jb->run = 0;
        }
    }
    if (excess < -EPS) { /* the playout point is ahead of the target: fill or grow */
        if (jb->started)
            jb->stalled++;
        return FM_JITTER_BUFFERING;
    }
    jb->started = 1;
    jb->since_skip++;
    if (excess > (double)jb->window * frame) { /* ticks stopped or the clock jumped */
        double jump_f = py_floordiv(excess, frame);
        if (!(jump_f < 4e18))
            return -1;
        int64_t jump = (int64_t)jump_f;
        jb->next += jump;
        excess -= (double)jump * frame;
        for (int64_t i = 0; i < jb->qlen;) {
            if (jb->items[i].slot < jb->next) {
                void *payload = jb->items[i].payload;
                qremove(jb, i);
                jb->skipped++;
                release(jb, payload);
            } else {
                i++;
            }
        }
        late_clear(jb);
        jb->run = 0;
    }
    while (excess >= HYSTERESIS * frame) {
        int64_t at = qfind(jb, jb->next);
        if (at >= 0) {
            if (jb->since_skip < SHRINK_EVERY)
                break;
            void *payload = jb->items[at].payload;
            qremove(jb, at);
            remember(jb, jb->next);
            jb->skipped++;
            jb->since_skip = 0;
            release(jb, payload);
        } else if (!jb->qlen) {
            break;
        }
        late_clear(jb);
        jb->run = 0;
        jb->next++;
        excess -= frame;
    }
    int64_t slot = jb->next++;
    int64_t at = qfind(jb, slot);
    if (at < 0) {
        jb->concealed++;
        jb->run++;
        return FM_JITTER_LOST;
    }
    *out = jb->items[at];
    qremove(jb, at);
    late_clear(jb);
    jb->run = 0;
    remember(jb, slot);
    jb->played++;
    return FM_JITTER_FRAME;
}
