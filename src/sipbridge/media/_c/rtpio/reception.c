/* sipbridge.media._rtpio's ReceptionStats and Inbound (inbound.h).
 *
 * ReceptionStats is sipbridge.media.rtp.ReceptionStats line for line (read that one: its
 * docstring says what is counted and why): the same state, with int64_t where Python has
 * unbounded ints (sequence cycles and counters, far from overflow for any call) and a
 * 128-bit bitmap of recent sequence numbers; the jitter estimate the same double
 * operations in the same order. update takes ints in the int64 range.
 *
 * Inbound is sipbridge.media.session.Inbound: plain attributes, read and written by the
 * session's own receive, and by the batch read's fast path in C (rtpio.c). */
#include "inbound.h"

#include <math.h>
#include <structmember.h>

#define SEQ_MOD 65536
#define MAX_DROPOUT 3000 /* RFC 3550 A.1, as sipbridge.media.rtp */
#define MAX_MISORDER 100
#define MIN_SEQUENTIAL 2

static PyObject *ReportBlock; /* sipbridge.media.rtp.ReportBlock */

/* ---- ReceptionStats ---------------------------------------------------------------- */

static void init_seq(RxStats *s, int64_t seq) {
    s->base_seq = seq;
    s->max_seq = seq;
    s->bad_seq = SEQ_MOD + 1;
    s->cycles = 0;
    s->received = 0;
    s->dup_base = s->duplicates;
    s->received_prior = 0;
    s->expected_prior = 0;
    s->has_transit = 0;
    s->seen = 1;
}

int rxstats_update(RxStats *s, int64_t sequence, int64_t timestamp, int64_t arrival) {
    int64_t seq = (int64_t)((uint64_t)sequence & 0xFFFF);
    if (s->probation) {
        if (s->probation < 0) {
            s->max_seq = (seq - 1) & 0xFFFF;
            s->probation = MIN_SEQUENTIAL;
        }
        if (seq != ((s->max_seq + 1) & 0xFFFF)) {
            s->probation = MIN_SEQUENTIAL - 1;
            s->max_seq = seq;
            return 0;
        }
        s->probation -= 1;
        s->max_seq = seq;
        if (s->probation)
            return 0;
        init_seq(s, seq);
    } else {
        int64_t udelta = (seq - s->max_seq) & 0xFFFF;
        if (udelta < MAX_DROPOUT) {
            if (udelta == 0) {
                s->duplicates += 1;
                s->received += 1;
                return 1;
            }
            if (seq < s->max_seq)
                s->cycles += SEQ_MOD;
            s->max_seq = seq;
            /* the bitmap keeps 128 bits: a shift past them leaves only the new one */
            s->seen = udelta < 128 ? (s->seen << udelta) | 1 : 1;
        } else if (udelta <= SEQ_MOD - MAX_MISORDER) {
            if (seq != s->bad_seq) {
                s->bad_seq = (seq + 1) & 0xFFFF;
                return 0;
            }
            init_seq(s, seq); /* two sequential packets after a big jump: a restart */
        } else {
            unsigned __int128 bit = (unsigned __int128)1 << (SEQ_MOD - udelta);
            if (s->seen & bit) {
                s->duplicates += 1;
                s->received += 1;
                return 1;
            }
            s->seen |= bit;
            s->reordered += 1;
        }
    }
    s->received += 1;
    int64_t transit = (int64_t)(((uint64_t)arrival - (uint64_t)timestamp) & 0xFFFFFFFFu);
    if (s->has_transit) {
        int64_t d = (transit - s->transit) & 0xFFFFFFFF;
        if (d > 0x7FFFFFFF)
            d = 0x100000000LL - d;
        s->jitter += ((double)d - s->jitter) / 16.0;
    }
    s->transit = transit;
    s->has_transit = 1;
    return 1;
}

static int64_t rx_expected(const RxStats *s) {
    if (s->probation)
        return 0;
    return s->cycles + s->max_seq - s->base_seq + 1;
}

static int64_t rx_fraction_lost(const RxStats *s) {
    int64_t expected = rx_expected(s) - s->expected_prior;
    int64_t lost = expected - (s->received - s->received_prior);
    if (expected <= 0 || lost <= 0)
        return 0;
    return (lost << 8) / expected;
}

static PyObject *RxStats_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "ReceptionStats() takes no arguments");
        return NULL;
    }
    RxStats *s = (RxStats *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->probation = -1; /* no packet yet */
    s->bad_seq = SEQ_MOD + 1;
    return (PyObject *)s;
}

static PyObject *RxStats_update(RxStats *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "update(sequence, timestamp, arrival)");
        return NULL;
    }
    long long v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    return PyBool_FromLong(rxstats_update(self, v[0], v[1], v[2]));
}

static PyObject *RxStats_jitter_ms(RxStats *self, PyObject *arg) {
    long long rate = PyLong_AsLongLong(arg);
    if (rate == -1 && PyErr_Occurred())
        return NULL;
    if (rate == 0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "float division by zero");
        return NULL;
    }
    return PyFloat_FromDouble(self->jitter * 1000.0 / (double)rate);
}

static PyObject *RxStats_report_block(RxStats *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"ssrc", "lsr", "dlsr", NULL};
    PyObject *ssrc, *lsr = NULL, *dlsr = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO", keywords, &ssrc, &lsr, &dlsr))
        return NULL;
    int64_t fraction = rx_fraction_lost(self);
    self->expected_prior = rx_expected(self);
    self->received_prior = self->received;
    int64_t lost = rx_expected(self) - self->received;
    lost = lost < -0x800000 ? -0x800000 : lost > 0x7FFFFF ? 0x7FFFFF : lost;
    int64_t highest = (self->cycles + self->max_seq) & 0xFFFFFFFF;
    double j = trunc(self->jitter);
    long long jitter = j >= 4294967295.0 ? 4294967295LL : (long long)j;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    PyObject *block = PyObject_CallFunction(
        ReportBlock, "OLLLLOO", ssrc, (long long)fraction, (long long)lost,
        (long long)highest, jitter, lsr ? lsr : zero, dlsr ? dlsr : zero);
    Py_DECREF(zero);
    return block;
}

#define RX_INT(name, expr)                                                           \
    static PyObject *RxStats_get_##name(RxStats *self, void *Py_UNUSED(closure)) {  \
        return PyLong_FromLongLong((long long)(expr));                              \
    }
RX_INT(received, self->received)
RX_INT(extended_max, self->cycles + self->max_seq)
RX_INT(expected, rx_expected(self))
RX_INT(lost, rx_expected(self) - self->received)
RX_INT(fraction_lost, rx_fraction_lost(self))
RX_INT(duplicates, self->duplicates)
RX_INT(reordered, self->reordered)

static PyObject *RxStats_get_missing(RxStats *self, void *Py_UNUSED(closure)) {
    int64_t unique = self->received - (self->duplicates - self->dup_base);
    int64_t missing = rx_expected(self) - unique;
    return PyLong_FromLongLong(missing > 0 ? missing : 0);
}

static PyObject *RxStats_get_jitter(RxStats *self, void *Py_UNUSED(closure)) {
    return PyFloat_FromDouble(self->jitter);
}

#define RX_GET(name, doc) {#name, (getter)RxStats_get_##name, NULL, doc, NULL}

static PyGetSetDef RxStats_getset[] = {
    RX_GET(received, "Packets counted since the source became valid (or restarted)."),
    RX_GET(extended_max, "Highest sequence number seen, with wrap-around cycles."),
    RX_GET(expected, "Packets expected since the base sequence number."),
    RX_GET(lost, "Cumulative loss; negative when duplicates outnumber losses."),
    RX_GET(missing, "Sequence numbers from the base to the highest seen never received."),
    RX_GET(fraction_lost, "Loss since the last report block, in 1/256."),
    RX_GET(jitter, "Interarrival jitter estimate in timestamp units."),
    RX_GET(duplicates, "Duplicate packets."),
    RX_GET(reordered, "Packets that came after a later one."),
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef RxStats_methods[] = {
    {"update", (PyCFunction)(void (*)(void))RxStats_update, METH_FASTCALL,
     "update(sequence, timestamp, arrival) -> bool: account one packet (A.1, A.8)."},
    {"jitter_ms", (PyCFunction)RxStats_jitter_ms, METH_O,
     "jitter_ms(clock_rate) -> float: the jitter in milliseconds."},
    {"report_block", (PyCFunction)(void (*)(void))RxStats_report_block,
     METH_VARARGS | METH_KEYWORDS,
     "report_block(ssrc, lsr=0, dlsr=0) -> ReportBlock; starts a new loss interval."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject RxStatsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sipbridge.media._rtpio.ReceptionStats",
    .tp_basicsize = sizeof(RxStats),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Per-source reception state of RFC 3550 appendix A "
              "(sipbridge.media.rtp.ReceptionStats, compiled).",
    .tp_new = RxStats_new,
    .tp_methods = RxStats_methods,
    .tp_getset = RxStats_getset,
};

/* ---- Inbound ------------------------------------------------------------------------- */

static PyObject *Inbound_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"jitter", "rx", "now", "rate", "burst", NULL};
    PyObject *jitter, *rx;
    double now, rate, burst;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOddd", keywords, &jitter, &rx, &now,
                                     &rate, &burst))
        return NULL;
    Inbound *self = (Inbound *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->jitter = Py_NewRef(jitter);
    self->rx = Py_NewRef(rx);
    self->latched = Py_NewRef(Py_None);
    self->ssrc = Py_NewRef(Py_None);
    self->tokens = burst;
    self->token_at = now;
    self->last = now;
    self->rate = rate;
    self->burst = burst;
    self->pt = -1;
    return (PyObject *)self;
}

static void Inbound_dealloc(Inbound *self) {
    Py_CLEAR(self->jitter);
    Py_CLEAR(self->rx);
    Py_CLEAR(self->latched);
    Py_CLEAR(self->ssrc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Inbound_get_ssrc(Inbound *self, void *Py_UNUSED(closure)) {
    return Py_NewRef(self->ssrc);
}

static int Inbound_set_ssrc(Inbound *self, PyObject *value, void *Py_UNUSED(closure)) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "ssrc cannot be deleted");
        return -1;
    }
    int has = value != Py_None;
    unsigned long v = 0;
    if (has) {
        v = PyLong_AsUnsignedLong(value);
        if (v == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        if (v > 0xFFFFFFFFul) {
            PyErr_SetString(PyExc_ValueError, "an SSRC fits 32 bits");
            return -1;
        }
    }
    Py_SETREF(self->ssrc, Py_NewRef(value));
    self->has_ssrc = has;
    self->ssrc_value = (uint32_t)v;
    return 0;
}

static PyMemberDef Inbound_members[] = {
    {"packets", T_LONGLONG, offsetof(Inbound, packets), 0,
     "Datagrams on the RTP port other than STUN (packets_in)."},
    {"foreign", T_LONGLONG, offsetof(Inbound, foreign), 0,
     "Consecutive packets from another SSRC."},
    {"audio", T_LONGLONG, offsetof(Inbound, audio), 0, "Packets of the stream taken in."},
    {"clock_rate", T_LONGLONG, offsetof(Inbound, clock_rate), 0, "The codec's RTP clock."},
    {"tokens", T_DOUBLE, offsetof(Inbound, tokens), 0, "The flood bucket's tokens."},
    {"token_at", T_DOUBLE, offsetof(Inbound, token_at), 0, "When it was last filled."},
    {"last", T_DOUBLE, offsetof(Inbound, last), 0, "When the last RTP packet arrived."},
    {"rate", T_DOUBLE, offsetof(Inbound, rate), READONLY, "Flood tokens per second."},
    {"burst", T_DOUBLE, offsetof(Inbound, burst), READONLY, "The flood bucket's size."},
    {"pt", T_INT, offsetof(Inbound, pt), 0,
     "The payload type the compiled read takes in C; -1: none (all go to the session)."},
    {"latched", T_OBJECT_EX, offsetof(Inbound, latched), 0,
     "None, or the (host, port) the stream is latched to."},
    {"rx", T_OBJECT_EX, offsetof(Inbound, rx), 0, "The stream's ReceptionStats."},
    {"jitter", T_OBJECT_EX, offsetof(Inbound, jitter), READONLY, "The jitter buffer."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Inbound_getset[] = {
    {"ssrc", (getter)Inbound_get_ssrc, (setter)Inbound_set_ssrc,
     "None, or the remote SSRC taken.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject InboundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sipbridge.media._rtpio.Inbound",
    .tp_basicsize = sizeof(Inbound),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A session's receive state (sipbridge.media.session.Inbound, compiled).",
    .tp_new = Inbound_new,
    .tp_dealloc = (destructor)Inbound_dealloc,
    .tp_members = Inbound_members,
    .tp_getset = Inbound_getset,
};

int reception_ready(void) {
    if (PyType_Ready(&RxStatsType) < 0 || PyType_Ready(&InboundType) < 0)
        return -1;
    PyObject *rtp = PyImport_ImportModule("sipbridge.media.rtp");
    if (rtp == NULL)
        return -1;
    ReportBlock = PyObject_GetAttrString(rtp, "ReportBlock");
    Py_DECREF(rtp);
    return ReportBlock == NULL ? -1 : 0;
}
