/* sipbridge.media._jitter: the compiled JitterBuffer, the same class as
   sipbridge.media.jitterbuffer.JitterBuffer (constructor keywords, put/get/ready,
   set_clock_rate, counters and properties) over fastmedia_jitter.h. `get` returns that
   module's Frame objects (its `buffering` and `lost` singletons, or a new Frame).

   Its domain is a real stream's: sequence in 0..65535, timestamp in 0..2**32-1 (the RTP
   fields), `now` finite (ValueError otherwise); put and get take positional arguments. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#include "fastmedia_jitter.h"

static PyObject *Frame;     /* sipbridge.media.jitterbuffer.Frame */
static PyObject *Buffering; /* its _BUFFERING and _LOST singletons */
static PyObject *Lost;
static PyObject *FramePayload, *FrameSequence, *FrameLost, *FrameBuffering; /* slots */

typedef struct {
    PyObject_HEAD
    int busy; /* in a call that may release a payload (and so run Python code) */
    fm_jitter *jb;
} JitterObject;

static void release_payload(void *ctx, void *payload) {
    (void)ctx;
    Py_DECREF((PyObject *)payload);
}

static int enter(JitterObject *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "JitterBuffer used while releasing a payload");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static PyObject *Jitter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"frame_ms", "clock_rate", "min_delay_ms", "max_delay_ms",
                               "initial_delay_ms", NULL};
    long long frame_ms = 20, clock_rate = 8000, min_delay = 0, max_delay = 200, initial = 40;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$LLLLL", keywords, &frame_ms,
                                     &clock_rate, &min_delay, &max_delay, &initial))
        return NULL;
    fm_jitter_config config = {frame_ms, clock_rate, min_delay, max_delay, initial};
    int64_t window;
    const char *error = fm_jitter_check(&config, &window);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    JitterObject *self = (JitterObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->jb = PyMem_Malloc(fm_jitter_size(window));
    if (!self->jb) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    fm_jitter_init(self->jb, &config, release_payload, NULL);
    return (PyObject *)self;
}

static int Jitter_traverse(JitterObject *self, visitproc visit, void *arg) {
    fm_jitter *jb = self->jb;
    if (!jb)
        return 0;
    for (int64_t i = 0; i < jb->qlen; i++)
        Py_VISIT((PyObject *)jb->items[i].payload);
    for (int64_t i = 0; i < jb->llen; i++)
        Py_VISIT((PyObject *)jb->items[jb->qcap + i].payload);
    return 0;
}

static int Jitter_clear(JitterObject *self) {
    if (self->jb && !self->busy) {
        self->busy = 1;
        fm_jitter_clear(self->jb);
        self->busy = 0;
    }
    return 0;
}

static void Jitter_dealloc(JitterObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->jb) {
        self->busy = 1;
        fm_jitter_clear(self->jb);
        PyMem_Free(self->jb);
        self->jb = NULL;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int parse_now(PyObject *arg, double *now) {
    *now = PyFloat_AsDouble(arg);
    if (*now == -1.0 && PyErr_Occurred())
        return -1;
    if (!isfinite(*now) || fabs(*now) > FM_JITTER_MAX_TIME) {
        PyErr_SetString(PyExc_ValueError, "now must be a finite time in seconds");
        return -1;
    }
    return 0;
}

/* put with `now` already checked: 1 filed, 0 dropped, -1 with the exception set. */
static int put_checked(PyObject *obj, uint16_t sequence, uint32_t timestamp,
                       PyObject *payload, double now) {
    JitterObject *self = (JitterObject *)obj;
    if (enter(self) < 0)
        return -1;
    Py_INCREF(payload);
    int filed = fm_jitter_put(self->jb, sequence, timestamp, payload, now);
    self->busy = 0;
    if (filed == 1)
        return 1;
    Py_DECREF(payload);
    if (filed < 0) {
        PyErr_SetString(PyExc_RuntimeError, "jitter buffer queue full");
        return -1;
    }
    return 0;
}

/* The capsule's put: the method's, `now` checked as the method checks it. */
static int api_put(PyObject *obj, uint16_t sequence, uint32_t timestamp, PyObject *payload,
                   double now) {
    if (!isfinite(now) || fabs(now) > FM_JITTER_MAX_TIME) {
        PyErr_SetString(PyExc_ValueError, "now must be a finite time in seconds");
        return -1;
    }
    return put_checked(obj, sequence, timestamp, payload, now);
}

static PyObject *Jitter_put(JitterObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(sequence, timestamp, payload, now)");
        return NULL;
    }
    long long sequence = PyLong_AsLongLong(args[0]);
    if (sequence == -1 && PyErr_Occurred())
        return NULL;
    long long timestamp = PyLong_AsLongLong(args[1]);
    if (timestamp == -1 && PyErr_Occurred())
        return NULL;
    if (sequence < 0 || sequence > 0xFFFF || timestamp < 0 || timestamp > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "sequence must fit 16 bits and timestamp 32");
        return NULL;
    }
    double now;
    if (parse_now(args[3], &now) < 0)
        return NULL;
    int filed = put_checked((PyObject *)self, (uint16_t)sequence, (uint32_t)timestamp,
                            args[2], now);
    if (filed < 0)
        return NULL;
    return PyBool_FromLong(filed);
}

static PyObject *new_frame(PyObject *payload, uint16_t sequence) {
    /* Frame(payload, sequence), its fields set through their slots as the frozen
       dataclass's own __init__ does (object.__setattr__), without the call's cost. */
    PyTypeObject *type = (PyTypeObject *)Frame;
    PyObject *frame = type->tp_alloc(type, 0);
    if (!frame)
        return NULL;
    PyObject *seq = PyLong_FromLong(sequence);
    if (!seq) {
        Py_DECREF(frame);
        return NULL;
    }
    int bad = Py_TYPE(FramePayload)->tp_descr_set(FramePayload, frame, payload) < 0
              || Py_TYPE(FrameSequence)->tp_descr_set(FrameSequence, frame, seq) < 0
              || Py_TYPE(FrameLost)->tp_descr_set(FrameLost, frame, Py_False) < 0
              || Py_TYPE(FrameBuffering)->tp_descr_set(FrameBuffering, frame, Py_False) < 0;
    Py_DECREF(seq);
    if (bad) {
        Py_DECREF(frame);
        return NULL;
    }
    return frame;
}

static PyObject *Jitter_get(JitterObject *self, PyObject *arg) {
    double now;
    if (parse_now(arg, &now) < 0 || enter(self) < 0)
        return NULL;
    fm_jitter_item item;
    int kind = fm_jitter_get(self->jb, now, &item);
    self->busy = 0;
    switch (kind) {
    case FM_JITTER_BUFFERING:
        return Py_NewRef(Buffering);
    case FM_JITTER_LOST:
        return Py_NewRef(Lost);
    case FM_JITTER_FRAME: {
        PyObject *frame = new_frame((PyObject *)item.payload, item.sequence);
        Py_DECREF((PyObject *)item.payload); /* the frame holds it now */
        return frame;
    }
    default:
        PyErr_SetString(PyExc_OverflowError, "the playout point left the int64 range");
        return NULL;
    }
}

static PyObject *Jitter_ready(JitterObject *self, PyObject *arg) {
    double now;
    if (parse_now(arg, &now) < 0)
        return NULL;
    return PyBool_FromLong(fm_jitter_ready(self->jb, now));
}

static PyObject *Jitter_set_clock_rate(JitterObject *self, PyObject *arg) {
    long long clock_rate = PyLong_AsLongLong(arg);
    if (clock_rate == -1 && PyErr_Occurred())
        return NULL;
    if (enter(self) < 0)
        return NULL;
    int ok = fm_jitter_set_clock_rate(self->jb, clock_rate);
    self->busy = 0;
    if (ok < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "frame_ms and clock_rate must give a whole number of samples");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Jitter_sizeof(JitterObject *self, PyObject *unused) {
    (void)unused;
    return PyLong_FromSize_t(sizeof(JitterObject) + fm_jitter_size(self->jb->window));
}

static PyObject *get_counter(JitterObject *self, void *offset) {
    return PyLong_FromLongLong(*(int64_t *)((char *)self->jb + (size_t)offset));
}

static PyObject *get_delay_ms(JitterObject *self, void *unused) {
    (void)unused;
    return PyFloat_FromDouble(fm_jitter_delay_ms(self->jb));
}

static PyObject *get_depth(JitterObject *self, void *unused) {
    (void)unused;
    return PyLong_FromLongLong(self->jb->qlen);
}

static PyObject *get_clock_rate(JitterObject *self, void *unused) {
    (void)unused;
    return PyLong_FromLongLong(fm_jitter_clock_rate(self->jb));
}

static PyObject *get_held(JitterObject *self, void *unused) {
    (void)unused;
    return Py_BuildValue("{s:L,s:L,s:i}", "late", (long long)self->jb->llen, "played",
                         (long long)fm_jitter_played_held(self->jb), "minima", self->jb->mlen);
}

#define COUNTER(name, doc) \
    {#name, (getter)get_counter, NULL, doc, (void *)offsetof(fm_jitter, name)}

static PyGetSetDef Jitter_getset[] = {
    COUNTER(received, "Packets put."),
    COUNTER(late, "Packets for slots already played or concealed."),
    COUNTER(duplicates, "Packets for a slot queued, kept or just played."),
    COUNTER(reordered, "Packets behind the highest sequence number seen."),
    COUNTER(overflow, "Packets out of the window (a flood, or a new stream's first)."),
    COUNTER(played, "Frames handed back."),
    COUNTER(concealed, "Ticks with no frame for their slot."),
    COUNTER(restarts, "New streams taken up."),
    COUNTER(skipped, "Queued frames dropped to shrink the delay."),
    COUNTER(stalled, "Ticks held back (answered `buffering`) to grow it."),
    {"delay_ms", (getter)get_delay_ms, NULL,
     "The current target delay beyond the fastest transit, in milliseconds.", NULL},
    {"depth", (getter)get_depth, NULL, "Frames queued.", NULL},
    {"clock_rate", (getter)get_clock_rate, NULL, "The RTP clock rate.", NULL},
    {"held", (getter)get_held, NULL,
     "What it keeps besides the queue: late frames, slots played, transit minima.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Jitter_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Jitter_put, METH_FASTCALL,
     "put(sequence, timestamp, payload, now) -> bool: files one packet; False if dropped."},
    {"get", (PyCFunction)Jitter_get, METH_O,
     "get(now) -> Frame: the frame for this playout tick; advances the playout point."},
    {"ready", (PyCFunction)Jitter_ready, METH_O,
     "ready(now) -> bool: whether get(now) would hand back the queued frame at once."},
    {"set_clock_rate", (PyCFunction)Jitter_set_clock_rate, METH_O,
     "set_clock_rate(clock_rate): a re-negotiated codec's clock; slots are counted anew."},
    {"__sizeof__", (PyCFunction)Jitter_sizeof, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject JitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sipbridge.media._jitter.JitterBuffer",
    .tp_doc = "Reorders, times and adaptively delays one RTP stream's frames "
              "(sipbridge.media.jitterbuffer, compiled).",
    .tp_basicsize = sizeof(JitterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Jitter_new,
    .tp_dealloc = (destructor)Jitter_dealloc,
    .tp_traverse = (traverseproc)Jitter_traverse,
    .tp_clear = (inquiry)Jitter_clear,
    .tp_methods = Jitter_methods,
    .tp_getset = Jitter_getset,
};

static fm_jitter_api jitter_api = {&JitterType, api_put};

static struct PyModuleDef jitter_module = {
    PyModuleDef_HEAD_INIT, "sipbridge.media._jitter",
    "The jitter buffer of sipbridge.media.jitterbuffer, compiled.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jitter(void) {
    PyObject *reference = PyImport_ImportModule("sipbridge.media.jitterbuffer");
    if (!reference)
        return NULL;
    Frame = PyObject_GetAttrString(reference, "Frame");
    Buffering = PyObject_GetAttrString(reference, "_BUFFERING");
    Lost = PyObject_GetAttrString(reference, "_LOST");
    Py_DECREF(reference);
    if (!Frame || !Buffering || !Lost || !PyType_Check(Frame))
        return NULL;
    FramePayload = PyObject_GetAttrString(Frame, "payload");
    FrameSequence = PyObject_GetAttrString(Frame, "sequence");
    FrameLost = PyObject_GetAttrString(Frame, "lost");
    FrameBuffering = PyObject_GetAttrString(Frame, "buffering");
    PyObject *slots[] = {FramePayload, FrameSequence, FrameLost, FrameBuffering};
    for (int i = 0; i < 4; i++) {
        if (!slots[i])
            return NULL;
        if (!Py_TYPE(slots[i])->tp_descr_set) {
            PyErr_SetString(PyExc_ImportError, "Frame's fields are not slots");
            return NULL;
        }
    }
    if (PyType_Ready(&JitterType) < 0)
        return NULL;
    PyObject *capsule = NULL;
    PyObject *module = PyModule_Create(&jitter_module);
    if (!module)
        return NULL;
    if (PyModule_AddObjectRef(module, "JitterBuffer", (PyObject *)&JitterType) < 0
        || PyModule_AddObjectRef(module, "Frame", Frame) < 0
        || (capsule = PyCapsule_New(&jitter_api, FM_JITTER_CAPSULE, NULL)) == NULL
        || PyModule_AddObjectRef(module, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(module);
        return NULL;
    }
    Py_DECREF(capsule);
    return module;
}
