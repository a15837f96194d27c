/* The receive side's per-packet state in C, for the batch read's fast path (rtpio.c):
 * ReceptionStats (sipbridge.media.rtp.ReceptionStats, RFC 3550 A.1, A.3, A.8, the same
 * state and results) and Inbound (sipbridge.media.session.Inbound: a session's arrival
 * counters, flood bucket, latched source and remote SSRC, its ReceptionStats and its
 * jitter buffer). Both live in sipbridge.media._rtpio (reception.c). */
#ifndef SIPBRIDGE_RTPIO_INBOUND_H
#define SIPBRIDGE_RTPIO_INBOUND_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    int64_t probation, max_seq, base_seq, bad_seq, cycles, received, dup_base;
    int64_t received_prior, expected_prior, transit, duplicates, reordered;
    int has_transit;
    double jitter;
    unsigned __int128 seen;
} RxStats;

typedef struct {
    PyObject_HEAD
    long long packets, foreign, audio, clock_rate;
    double tokens, token_at, last, rate, burst;
    int pt;             /* the payload type the fast path takes; -1: none */
    PyObject *latched;  /* None, or the (host, port) RTP is latched to */
    PyObject *ssrc;     /* None, or the remote SSRC (an int) */
    int has_ssrc;
    uint32_t ssrc_value;
    PyObject *rx;       /* a ReceptionStats (the fast path takes only RxStats) */
    PyObject *jitter;   /* a JitterBuffer (the fast path takes only _jitter's) */
} Inbound;

extern PyTypeObject RxStatsType;
extern PyTypeObject InboundType;

/* ReceptionStats.update; 1: counted, 0: not. */
int rxstats_update(RxStats *s, int64_t sequence, int64_t timestamp, int64_t arrival);
/* Sets up both types and what they import; -1 with the exception set. */
int reception_ready(void);

#endif
