/* sipbridge.media._kernels: the kernels of fastmedia_kernels.h for Python.
 *
 * Samples come in as any contiguous buffer of int16 (a numpy int16 array, either byte
 * order) or of bytes (s16le, an even number of them), as g711.py takes them; samples go
 * out as a bytearray of native int16 (numpy.frombuffer(out, numpy.int16) reads it).
 *
 *   ulaw_encode(samples) -> bytes        ulaw_decode(octets) -> bytearray
 *   alaw_encode(samples) -> bytes        alaw_decode(octets) -> bytearray
 *   Resampler(8000, 24000) or Resampler(24000, 8000): .process(samples) -> bytearray
 *   echo_frame(up, down, alaw, payload, pt, seq, ts, ssrc, marker) -> (bytearray, bytes)
 *   DOWN_TAPS, UP_TAPS: the filters' taps, in the order fastmedia_kernels.h keeps them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <string.h>

#include "fastmedia_kernels.h"

/* ---- int16 samples from a buffer ------------------------------------------------------ */

typedef struct {
    Py_buffer view;
    const unsigned char *bytes;
    Py_ssize_t count;  /* samples */
    int direct;        /* the bytes are aligned native int16: used as they are */
    int big_endian;    /* otherwise: the order to read them in */
} Samples;

static int host_is_big_endian(void)
{
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 0;
}

/* Open `obj` as int16 samples; -1 with an exception set (and nothing held) if it is not
 * a contiguous 1-D buffer of int16, or of an even number of bytes. */
static int samples_open(PyObject *obj, Samples *s)
{
    if (PyObject_GetBuffer(obj, &s->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *format = s->view.format ? s->view.format : "B";
    char order = '@';
    if (*format && strchr("@=<>!", *format))
        order = *format++;
    int host_big = host_is_big_endian();
    if (s->view.itemsize == 2 && strcmp(format, "h") == 0) {
        s->big_endian = order == '>' || order == '!' ? 1 : order == '<' ? 0 : host_big;
    } else if (s->view.itemsize == 1 && (strcmp(format, "B") == 0 || strcmp(format, "b") == 0
                                         || strcmp(format, "c") == 0)) {
        s->big_endian = 0; /* raw PCM is s16le */
        if (s->view.len % 2) {
            PyErr_Format(PyExc_ValueError,
                         "16-bit PCM has an even number of bytes, not %zd", s->view.len);
            goto fail;
        }
    } else {
        PyErr_Format(PyExc_TypeError, "int16 samples or s16le bytes expected, not format '%s'",
                     s->view.format ? s->view.format : "B");
        goto fail;
    }
    if (s->view.ndim != 1) {
        PyErr_Format(PyExc_ValueError, "a 1-D buffer of samples expected, not %d-D",
                     s->view.ndim);
        goto fail;
    }
    s->bytes = (const unsigned char *)s->view.buf;
    s->count = s->view.len / 2;
    s->direct = s->big_endian == host_big && ((uintptr_t)s->bytes % _Alignof(int16_t)) == 0;
    return 0;
fail:
    PyBuffer_Release(&s->view);
    return -1;
}

typedef void (*SamplesFn)(void *context, const int16_t *samples, size_t count);

/* Hand the samples to `fn`: all at once when they can be read in place, otherwise in
 * blocks put in the host's order on the stack. */
static void samples_each(const Samples *s, SamplesFn fn, void *context)
{
    if (s->direct) {
        fn(context, (const int16_t *)s->bytes, (size_t)s->count);
        return;
    }
    enum { BLOCK = 256 };
    int16_t block[BLOCK];
    for (Py_ssize_t start = 0; start < s->count; start += BLOCK) {
        Py_ssize_t n = s->count - start < BLOCK ? s->count - start : BLOCK;
        const unsigned char *b = s->bytes + 2 * start;
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned hi = s->big_endian ? b[2 * i] : b[2 * i + 1];
            unsigned lo = s->big_endian ? b[2 * i + 1] : b[2 * i];
            block[i] = (int16_t)(uint16_t)(hi << 8 | lo);
        }
        fn(context, block, (size_t)n);
    }
}

/* A new bytearray of `count` int16 samples (not yet written). */
static PyObject *new_samples(Py_ssize_t count)
{
    if (count > PY_SSIZE_T_MAX / 2)
        return PyErr_NoMemory();
    return PyByteArray_FromStringAndSize(NULL, count * 2);
}

/* ---- G.711 ---------------------------------------------------------------------------- */

typedef struct {
    void (*kernel)(const int16_t *, uint8_t *, size_t);
    uint8_t *out;
} EncodeContext;

static void encode_block(void *context, const int16_t *samples, size_t count)
{
    EncodeContext *c = context;
    c->kernel(samples, c->out, count);
    c->out += count;
}

static PyObject *encode(PyObject *obj, void (*kernel)(const int16_t *, uint8_t *, size_t))
{
    Samples s;
    if (samples_open(obj, &s) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, s.count);
    if (out != NULL) {
        EncodeContext c = {kernel, (uint8_t *)PyBytes_AS_STRING(out)};
        samples_each(&s, encode_block, &c);
    }
    PyBuffer_Release(&s.view);
    return out;
}

static PyObject *decode(PyObject *obj, void (*kernel)(const uint8_t *, int16_t *, size_t))
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = new_samples(view.len);
    if (out != NULL)
        kernel((const uint8_t *)view.buf, (int16_t *)PyByteArray_AS_STRING(out),
               (size_t)view.len);
    PyBuffer_Release(&view);
    return out;
}

static PyObject *ulaw_encode(PyObject *module, PyObject *samples)
{
    (void)module;
    return encode(samples, fm_ulaw_encode);
}

static PyObject *alaw_encode(PyObject *module, PyObject *samples)
{
    (void)module;
    return encode(samples, fm_alaw_encode);
}

static PyObject *ulaw_decode(PyObject *module, PyObject *octets)
{
    (void)module;
    return decode(octets, fm_ulaw_decode);
}

static PyObject *alaw_decode(PyObject *module, PyObject *octets)
{
    (void)module;
    return decode(octets, fm_alaw_decode);
}

/* ---- Resampler ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int in_rate, out_rate;
    int up; /* 1:3, else 3:1 */
    fm_up3 up3;
    fm_down3 down3;
} Resampler;

static int Resampler_init(Resampler *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"in_rate", "out_rate", NULL};
    int in_rate, out_rate;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii", names, &in_rate, &out_rate))
        return -1;
    if (in_rate == 8000 && out_rate == 24000) {
        self->up = 1;
    } else if (in_rate == 24000 && out_rate == 8000) {
        self->up = 0;
    } else {
        PyErr_Format(PyExc_ValueError, "converts 8000 <-> 24000 Hz only, not %d -> %d",
                     in_rate, out_rate);
        return -1;
    }
    self->in_rate = in_rate;
    self->out_rate = out_rate;
    fm_up3_init(&self->up3);
    fm_down3_init(&self->down3);
    return 0;
}

typedef struct {
    Resampler *self;
    int16_t *out;
} ResampleContext;

static void up_block(void *context, const int16_t *samples, size_t count)
{
    ResampleContext *c = context;
    fm_up3_process(&c->self->up3, samples, count, c->out);
    c->out += 3 * count;
}

static void down_block(void *context, const int16_t *samples, size_t count)
{
    ResampleContext *c = context;
    c->out += fm_down3_process(&c->self->down3, samples, count, c->out);
}

static PyObject *Resampler_process(Resampler *self, PyObject *obj)
{
    Samples s;
    if (samples_open(obj, &s) < 0)
        return NULL;
    PyObject *out = NULL;
    if (self->up && s.count > PY_SSIZE_T_MAX / 6) {
        PyErr_NoMemory();
    } else {
        Py_ssize_t count = self->up ? 3 * s.count
                                    : (Py_ssize_t)fm_down3_out_len(&self->down3, (size_t)s.count);
        out = new_samples(count);
    }
    if (out != NULL) {
        ResampleContext c = {self, (int16_t *)PyByteArray_AS_STRING(out)};
        samples_each(&s, self->up ? up_block : down_block, &c);
    }
    PyBuffer_Release(&s.view);
    return out;
}

static PyMethodDef Resampler_methods[] = {
    {"process", (PyCFunction)Resampler_process, METH_O,
     "Convert one chunk of int16 samples; native int16 out, in a bytearray (1:3 gives "
     "3 per sample in; 3:1 carries what is short of a multiple of 3 to the next chunk)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Resampler_members[] = {
    {"in_rate", T_INT, offsetof(Resampler, in_rate), READONLY, NULL},
    {"out_rate", T_INT, offsetof(Resampler, out_rate), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ResamplerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sipbridge.media._kernels.Resampler",
    .tp_doc = "The 1:3 (8 -> 24 kHz) or 3:1 (24 -> 8 kHz) FIR, chunk by chunk, its state "
              "kept in between: resample.Resampler's output bit for bit.",
    .tp_basicsize = sizeof(Resampler),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Resampler_init,
    .tp_methods = Resampler_methods,
    .tp_members = Resampler_members,
};

/* ---- one echoed G.711 frame ---------------------------------------------------------- */

#define ECHO_MAX_FRAME 480 /* octets of G.711 in one frame, at most (60 ms) */

/* echo_frame(up, down, alaw, payload, pt, sequence, timestamp, ssrc, marker):
 * a G.711 frame decoded, 1:3 through `up`, 3:1 through `down`, encoded in the same law
 * and put in an RTP packet (no CSRC, extension or padding): what MediaSession's tick does
 * for an echo, bit for bit, in one call. Gives (decoded samples as a bytearray, packet),
 * or None, with nothing changed, when the frame does not fit the shortcut (empty or over
 * ECHO_MAX_FRAME octets, or `down` carries samples from before). */
static PyObject *echo_frame(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *up_obj, *down_obj;
    int alaw, marker;
    Py_buffer payload;
    unsigned int pt;
    unsigned long sequence, timestamp, ssrc;
    if (!PyArg_ParseTuple(args, "O!O!py*Ikkkp", &ResamplerType, &up_obj, &ResamplerType,
                          &down_obj, &alaw, &payload, &pt, &sequence, &timestamp, &ssrc,
                          &marker))
        return NULL;
    Resampler *up = (Resampler *)up_obj, *down = (Resampler *)down_obj;
    PyObject *result = NULL;
    if (!up->up || down->up) {
        PyErr_SetString(PyExc_ValueError, "echo_frame takes a 1:3 and a 3:1 Resampler");
        goto done;
    }
    if (pt > 127 || ssrc > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_ValueError, "payload type or SSRC out of range");
        goto done;
    }
    size_t n = (size_t)payload.len;
    if (n == 0 || n > ECHO_MAX_FRAME || down->down3.carried != 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    int16_t wide[3 * ECHO_MAX_FRAME], narrow[ECHO_MAX_FRAME];
    PyObject *pcm = new_samples((Py_ssize_t)n);
    PyObject *packet = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(12 + n));
    if (pcm == NULL || packet == NULL) {
        Py_XDECREF(pcm);
        Py_XDECREF(packet);
        goto done;
    }
    int16_t *samples = (int16_t *)PyByteArray_AS_STRING(pcm);
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(packet);
    const uint8_t *in = (const uint8_t *)payload.buf;
    if (alaw)
        fm_alaw_decode(in, samples, n);
    else
        fm_ulaw_decode(in, samples, n);
    fm_up3_process(&up->up3, samples, n, wide);
    fm_down3_process(&down->down3, wide, 3 * n, narrow); /* exactly n: nothing carried */
    out[0] = 0x80;
    out[1] = (uint8_t)(pt | (marker ? 0x80 : 0));
    out[2] = (uint8_t)(sequence >> 8);
    out[3] = (uint8_t)sequence;
    out[4] = (uint8_t)(timestamp >> 24);
    out[5] = (uint8_t)(timestamp >> 16);
    out[6] = (uint8_t)(timestamp >> 8);
    out[7] = (uint8_t)timestamp;
    out[8] = (uint8_t)(ssrc >> 24);
    out[9] = (uint8_t)(ssrc >> 16);
    out[10] = (uint8_t)(ssrc >> 8);
    out[11] = (uint8_t)ssrc;
    if (alaw)
        fm_alaw_encode(narrow, out + 12, n);
    else
        fm_ulaw_encode(narrow, out + 12, n);
    result = PyTuple_Pack(2, pcm, packet);
    Py_DECREF(pcm);
    Py_DECREF(packet);
done:
    PyBuffer_Release(&payload);
    return result;
}

/* ---- the module ------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"ulaw_encode", ulaw_encode, METH_O, "G.711 μ-law: int16 samples to octets (bytes)."},
    {"ulaw_decode", ulaw_decode, METH_O, "G.711 μ-law: octets to int16 samples (bytearray)."},
    {"alaw_encode", alaw_encode, METH_O, "G.711 A-law: int16 samples to octets (bytes)."},
    {"alaw_decode", alaw_decode, METH_O, "G.711 A-law: octets to int16 samples (bytearray)."},
    {"echo_frame", echo_frame, METH_VARARGS,
     "One echoed G.711 frame: decode, 1:3, 3:1, encode, RTP header; (samples, packet) or "
     "None when it does not fit (then nothing changed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sipbridge.media._kernels",
    .m_doc = "G.711 and the 1:3 / 3:1 FIR, compiled: the Python reference's output bit for bit.",
    .m_size = -1,
    .m_methods = module_methods,
};

static PyObject *int_tuple(const int16_t *values, Py_ssize_t count)
{
    PyObject *tuple = PyTuple_New(count);
    for (Py_ssize_t i = 0; tuple != NULL && i < count; i++) {
        PyObject *value = PyLong_FromLong(values[i]);
        if (value == NULL) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, i, value);
    }
    return tuple;
}

PyMODINIT_FUNC PyInit__kernels(void)
{
    if (PyType_Ready(&ResamplerType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *up = PyTuple_New(3);
    for (Py_ssize_t p = 0; up != NULL && p < 3; p++) {
        PyObject *branch = int_tuple(fm_up_taps[p], FM_UP_HISTORY + 1);
        if (branch == NULL) {
            Py_CLEAR(up);
            break;
        }
        PyTuple_SET_ITEM(up, p, branch);
    }
    Py_INCREF(&ResamplerType);
    if (PyModule_AddObject(module, "Resampler", (PyObject *)&ResamplerType) < 0) {
        Py_DECREF(&ResamplerType);
        goto fail;
    }
    if (up == NULL || PyModule_AddObject(module, "UP_TAPS", up) < 0) {
        Py_XDECREF(up);
        goto fail;
    }
    PyObject *down = int_tuple(fm_down_taps, FM_FIR_TAPS);
    if (down == NULL || PyModule_AddObject(module, "DOWN_TAPS", down) < 0) {
        Py_XDECREF(down);
        goto fail;
    }
    if (PyModule_AddIntConstant(module, "SHIFT", FM_FIR_SHIFT) < 0)
        goto fail;
    return module;
fail:
    Py_DECREF(module);
    return NULL;
}
