/* sipbridge.media._rtpio: the RTP sockets of every call in one epoll set, read in
 * batches (recvmmsg) with their kernel receive times, the fixed header parsed as
 * sipbridge.media.rtp.parse_rtp does; and a pass's outgoing packets sent in one call.
 *
 * Poller(): an epoll set; fileno() is what the event loop watches (one add_reader).
 *   add(fd, token, parse) / enable(fd, token, parse, on) / remove(fd).
 *   poll() -> [(token, stamp, addr, data, parsed)]: for a `parse` socket, one entry per
 *   datagram read (stamp: the kernel's receive time, seconds since the epoch, or None;
 *   addr: (host, port); parsed: see parse()), or (token, None, None, None,
 *   "socket_error") for an error the read took off the socket; for another socket,
 *   (token, None, None, None, None): it is readable, its owner reads it.
 *   read(fd, token) -> the same entries for every datagram queued on one socket now.
 *   attach(token, inbound): the RTP socket of `token` belongs to a session whose
 *   receive state is `inbound` (an Inbound; None: no longer).
 *   receive(now, offset) -> poll()'s entries, but an ordinary packet for an attached
 *   socket is taken in C (take(), below) and its entry is only its token, an int: the
 *   session has it, and pumps. now: the loop's clock; offset: wall clock minus it.
 * take: the first datagram read from a socket in a receive (a later one may need the
 *   session to have pumped first) is taken in C when MediaSession.receive would do
 *   nothing else with it than count it (packets, flood bucket, arrival), account it in
 *   the ReceptionStats and put it in the jitter buffer: RTP (not STUN), parsed clean,
 *   from the latched source, the stream's SSRC and its audio payload type (so no DTMF),
 *   no marker, not the stream's first packet, the session not on SRTP (its Inbound's pt
 *   is -1 then), the flood bucket not empty. Anything else is an entry, as poll's.
 * parse(data) -> (pt, marker, sequence, timestamp, ssrc, payload, csrcs), or the reason
 *   parse_rtp would raise ("short", "version", "truncated", "padding"), or None for a
 *   datagram that is not RTP's to parse (empty, or first octet < 4: STUN, RFC 7983).
 * send(packets) -> [(index, errno)]: each (owner, fd, data, (host, port), size) sent
 *   with sendto (owner and size are the caller's, not read); the failures, by index.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fastmedia_jitter.h"
#include "fastmedia_rtpio.h"
#include "inbound.h"

#define DATAGRAM 2048   /* as session.readable's recvmsg(2048) */
#define PER_SOCKET 16   /* datagrams read from one socket in one recvmmsg */
#define EVENTS 256      /* ready sockets taken in one poll */
#define MAX_ENTRIES 1024 /* datagrams returned by one poll, at most */
#define ADDR_CACHE 1024 /* last source address per socket (by fd), as a Python tuple */
#define SEND_CHUNK 64

#ifndef SO_TIMESTAMPNS
#define SO_TIMESTAMPNS 35
#endif

static PyObject *reason_short, *reason_version, *reason_truncated, *reason_padding;
static PyObject *reason_socket_error;
static PyObject *empty_tuple;
static fm_jitter_api *jitter_api; /* sipbridge.media._jitter's; NULL: nothing taken in C */

struct addr_entry {
    int fd;
    socklen_t len;
    struct sockaddr_storage sa;
    PyObject *addr;
};

typedef struct {
    PyObject_HEAD
    int epfd;
    struct epoll_event events[EVENTS];
    struct mmsghdr msgs[PER_SOCKET];
    struct iovec iovs[PER_SOCKET];
    struct sockaddr_storage names[PER_SOCKET];
    char control[PER_SOCKET][CMSG_SPACE(sizeof(struct timespec))];
    unsigned char buffers[PER_SOCKET][DATAGRAM];
    struct addr_entry cache[ADDR_CACHE];
    PyObject **lanes; /* the attached Inbound of RTP token 2t at [t], or NULL */
    Py_ssize_t nlanes;
} Poller;

static PyObject *parsed_of(const uint8_t *data, size_t size, PyObject *bytes) {
    if (size == 0 || data[0] < 4)
        Py_RETURN_NONE;
    struct rtp_header h;
    switch (rtpio_parse(data, size, &h)) {
    case RTP_SHORT:
        return Py_NewRef(reason_short);
    case RTP_VERSION:
        return Py_NewRef(reason_version);
    case RTP_TRUNCATED:
        return Py_NewRef(reason_truncated);
    case RTP_PADDING:
        return Py_NewRef(reason_padding);
    case RTP_OK:
        break;
    }
    PyObject *payload;
    if (bytes != NULL && h.payload_offset == 0 && h.payload_end == size)
        payload = Py_NewRef(bytes);
    else
        payload = PyBytes_FromStringAndSize((const char *)data + h.payload_offset,
                                            (Py_ssize_t)(h.payload_end - h.payload_offset));
    if (payload == NULL)
        return NULL;
    PyObject *csrcs;
    if (h.csrc_count == 0) {
        csrcs = Py_NewRef(empty_tuple);
    } else {
        csrcs = PyTuple_New(h.csrc_count);
        if (csrcs == NULL) {
            Py_DECREF(payload);
            return NULL;
        }
        for (int i = 0; i < h.csrc_count; i++) {
            PyObject *v = PyLong_FromUnsignedLong(rtpio_be32(data + 12 + 4 * i));
            if (v == NULL) {
                Py_DECREF(csrcs);
                Py_DECREF(payload);
                return NULL;
            }
            PyTuple_SET_ITEM(csrcs, i, v);
        }
    }
    return Py_BuildValue("(iOiIINN)", (int)h.payload_type, h.marker ? Py_True : Py_False,
                         (int)h.sequence, (unsigned int)h.timestamp, (unsigned int)h.ssrc,
                         payload, csrcs);
}

static PyObject *rtpio_parse_py(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = parsed_of(view.buf, (size_t)view.len, NULL);
    PyBuffer_Release(&view);
    return result;
}

/* (host, port) of a source address, as socket.recvmsg gives its first two items. */
static PyObject *address_of(const struct sockaddr_storage *sa, socklen_t len) {
    char host[INET6_ADDRSTRLEN + 32];
    int port;
    if (sa->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof host) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        port = ntohs(in->sin_port);
    } else if (sa->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        int rc = getnameinfo((const struct sockaddr *)sa, len, host, sizeof host, NULL, 0,
                             NI_NUMERICHOST);
        if (rc != 0) {
            PyErr_SetString(PyExc_OSError, gai_strerror(rc));
            return NULL;
        }
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    } else {
        return Py_BuildValue("(si)", "", 0);
    }
    return Py_BuildValue("(si)", host, port);
}

static PyObject *cached_address(Poller *self, int fd, const struct sockaddr_storage *sa,
                                socklen_t len) {
    struct addr_entry *e = &self->cache[(unsigned)fd % ADDR_CACHE];
    if (e->addr != NULL && e->fd == fd && e->len == len && memcmp(&e->sa, sa, len) == 0)
        return Py_NewRef(e->addr);
    PyObject *addr = address_of(sa, len);
    if (addr == NULL)
        return NULL;
    Py_XSETREF(e->addr, Py_NewRef(addr));
    e->fd = fd;
    e->len = len;
    memcpy(&e->sa, sa, len);
    return addr;
}

static PyObject *Poller_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                            PyObject *Py_UNUSED(kwds)) {
    Poller *self = (Poller *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    for (int i = 0; i < PER_SOCKET; i++) {
        self->iovs[i].iov_base = self->buffers[i];
        self->iovs[i].iov_len = DATAGRAM;
    }
    return (PyObject *)self;
}

static void Poller_dealloc(Poller *self) {
    if (self->epfd >= 0)
        close(self->epfd);
    for (int i = 0; i < ADDR_CACHE; i++)
        Py_CLEAR(self->cache[i].addr);
    for (Py_ssize_t i = 0; i < self->nlanes; i++)
        Py_CLEAR(self->lanes[i]);
    PyMem_Free(self->lanes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Poller_fileno(Poller *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->epfd);
}

static PyObject *Poller_close(Poller *self, PyObject *Py_UNUSED(ignored)) {
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static int control(Poller *self, int op, int fd, unsigned long token, int parse, int on) {
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the poller is closed");
        return -1;
    }
    if (token > 0x7FFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "token out of range");
        return -1;
    }
    struct epoll_event ev;
    ev.events = on ? EPOLLIN : 0;
    ev.data.u64 = ((uint64_t)token << 33) | ((uint64_t)(parse != 0) << 32) | (uint32_t)fd;
    if (epoll_ctl(self->epfd, op, fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct addr_entry *e = &self->cache[(unsigned)fd % ADDR_CACHE];
    if (e->fd == fd)
        Py_CLEAR(e->addr); /* a new socket on this fd number: forget the old source */
    return 0;
}

static PyObject *Poller_add(Poller *self, PyObject *args) {
    int fd, parse;
    unsigned long token;
    if (!PyArg_ParseTuple(args, "ikp", &fd, &token, &parse))
        return NULL;
    if (control(self, EPOLL_CTL_ADD, fd, token, parse, 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Poller_enable(Poller *self, PyObject *args) {
    int fd, parse, on;
    unsigned long token;
    if (!PyArg_ParseTuple(args, "ikpp", &fd, &token, &parse, &on))
        return NULL;
    if (control(self, EPOLL_CTL_MOD, fd, token, parse, on) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Poller_remove(Poller *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    if (self->epfd >= 0 && epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 &&
        errno != ENOENT && errno != EBADF)
        return PyErr_SetFromErrno(PyExc_OSError);
    struct addr_entry *e = &self->cache[(unsigned)fd % ADDR_CACHE];
    if (e->fd == fd)
        Py_CLEAR(e->addr);
    Py_RETURN_NONE;
}

static PyObject *Poller_attach(Poller *self, PyObject *args) {
    unsigned long token;
    PyObject *inbound;
    if (!PyArg_ParseTuple(args, "kO", &token, &inbound))
        return NULL;
    if (token & 1 || token > 0x7FFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "attach() takes an RTP socket's token");
        return NULL;
    }
    if (inbound != Py_None && !Py_IS_TYPE(inbound, &InboundType)) {
        PyErr_SetString(PyExc_TypeError, "attach() takes an Inbound or None");
        return NULL;
    }
    Py_ssize_t at = (Py_ssize_t)(token >> 1);
    if (at >= self->nlanes) {
        if (inbound == Py_None)
            Py_RETURN_NONE;
        Py_ssize_t n = self->nlanes ? self->nlanes : 64;
        while (n <= at)
            n *= 2;
        PyObject **lanes = PyMem_Realloc(self->lanes, (size_t)n * sizeof *lanes);
        if (lanes == NULL)
            return PyErr_NoMemory();
        for (Py_ssize_t i = self->nlanes; i < n; i++)
            lanes[i] = NULL;
        self->lanes = lanes;
        self->nlanes = n;
    }
    Py_XSETREF(self->lanes[at], inbound == Py_None ? NULL : Py_NewRef(inbound));
    Py_RETURN_NONE;
}

/* MediaSession.receive of an ordinary packet, in C (see take at the top): 1 taken, 0
 * not ordinary (nothing changed), -1 with the exception set. */
static int take(Inbound *in, const uint8_t *data, size_t size, PyObject *addr,
                double now) {
    if (in->pt < 0 || size == 0 || data[0] < 4 || in->audio < 1 || !in->has_ssrc)
        return 0;
    if (jitter_api == NULL || !Py_IS_TYPE(in->rx, &RxStatsType) ||
        !Py_IS_TYPE(in->jitter, jitter_api->type))
        return 0;
    /* the jitter buffer's domain for `now`, and int(now * clock_rate) in an int64 */
    double units = now * (double)in->clock_rate;
    if (!isfinite(now) || fabs(now) > FM_JITTER_MAX_TIME || !(fabs(units) < 9.2e18))
        return 0;
    double tokens = in->tokens + (now - in->token_at) * in->rate;
    if (!(tokens < in->burst))
        tokens = in->burst;
    if (tokens < 1.0)
        return 0;
    if (addr != in->latched) {
        if (in->latched == Py_None)
            return 0;
        int same = PyObject_RichCompareBool(addr, in->latched, Py_EQ);
        if (same <= 0)
            return same;
    }
    struct rtp_header h;
    if (rtpio_parse(data, size, &h) != RTP_OK || h.payload_type != in->pt || h.marker ||
        h.ssrc != in->ssrc_value)
        return 0;
    in->packets += 1;
    in->tokens = tokens - 1.0;
    in->token_at = now;
    in->foreign = 0;
    in->audio += 1;
    in->last = now;
    rxstats_update((RxStats *)in->rx, h.sequence, h.timestamp, (int64_t)units);
    PyObject *payload = PyBytes_FromStringAndSize(
        (const char *)data + h.payload_offset, (Py_ssize_t)(h.payload_end - h.payload_offset));
    if (payload == NULL)
        return -1;
    int filed = jitter_api->put(in->jitter, h.sequence, h.timestamp, payload, now);
    Py_DECREF(payload);
    return filed < 0 ? -1 : 1;
}

static double stamp_of(struct msghdr *hdr, int *found) {
    *found = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(hdr); c != NULL; c = CMSG_NXTHDR(hdr, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            *found = 1;
            /* session.readable: sec + nsec * 1e-9 on Python floats, in that order */
            return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        }
    }
    return 0.0;
}

/* Read up to PER_SOCKET datagrams from `fd` and append their entries; -1 on error.
 * With `lane`, the first is taken in C if it is ordinary (`now`, `offset`: receive's). */
static int read_socket(Poller *self, int fd, PyObject *token, PyObject *out, int room,
                       Inbound *lane, double now, double offset) {
    int want = room < PER_SOCKET ? room : PER_SOCKET;
    for (int i = 0; i < want; i++) {
        struct msghdr *h = &self->msgs[i].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_name = &self->names[i];
        h->msg_namelen = sizeof self->names[i];
        h->msg_iov = &self->iovs[i];
        h->msg_iovlen = 1;
        h->msg_control = self->control[i];
        h->msg_controllen = sizeof self->control[i];
        self->msgs[i].msg_len = 0;
    }
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = recvmmsg(fd, self->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        /* an error queued on the socket (an ICMP unreachable): read, and said, as
         * session.readable's OSError is */
        PyObject *entry = PyTuple_Pack(5, token, Py_None, Py_None, Py_None,
                                       reason_socket_error);
        int rc = entry ? PyList_Append(out, entry) : -1;
        Py_XDECREF(entry);
        return rc < 0 ? -1 : 1;
    }
    if (n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &self->msgs[i].msg_hdr;
        size_t size = self->msgs[i].msg_len;
        if (size > DATAGRAM)
            size = DATAGRAM;
        int found;
        double stamp = stamp_of(h, &found);
        if (lane != NULL && i == 0) {
            PyObject *source = cached_address(self, fd, &self->names[i], h->msg_namelen);
            if (source == NULL)
                return -1;
            /* as engine._batch: now, or the kernel's stamp on the loop's clock */
            double arrival = now;
            if (found && stamp - offset < now)
                arrival = stamp - offset;
            int taken = take(lane, self->buffers[i], size, source, arrival);
            Py_DECREF(source);
            if (taken < 0 || (taken && PyList_Append(out, token) < 0))
                return -1;
            if (taken)
                continue;
        }
        PyObject *data = PyBytes_FromStringAndSize((const char *)self->buffers[i],
                                                   (Py_ssize_t)size);
        PyObject *addr = data ? cached_address(self, fd, &self->names[i], h->msg_namelen)
                              : NULL;
        PyObject *parsed = addr ? parsed_of(self->buffers[i], size, data) : NULL;
        PyObject *when = parsed ? (found ? PyFloat_FromDouble(stamp) : Py_NewRef(Py_None))
                                : NULL;
        PyObject *entry = NULL;
        if (when != NULL) {
            entry = PyTuple_New(5);
            if (entry != NULL) {
                PyTuple_SET_ITEM(entry, 0, Py_NewRef(token));
                PyTuple_SET_ITEM(entry, 1, when);
                PyTuple_SET_ITEM(entry, 2, addr);
                PyTuple_SET_ITEM(entry, 3, data);
                PyTuple_SET_ITEM(entry, 4, parsed);
            }
        }
        if (entry == NULL) {
            Py_XDECREF(when);
            Py_XDECREF(parsed);
            Py_XDECREF(addr);
            Py_XDECREF(data);
            return -1;
        }
        int rc = PyList_Append(out, entry);
        Py_DECREF(entry);
        if (rc < 0)
            return -1;
    }
    return n;
}

static PyObject *gather(Poller *self, int fast, double now, double offset) {
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the poller is closed");
        return NULL;
    }
    int ready;
    Py_BEGIN_ALLOW_THREADS
    ready = epoll_wait(self->epfd, self->events, EVENTS, 0);
    Py_END_ALLOW_THREADS
    if (ready < 0) {
        if (errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    int entries = 0;
    for (int i = 0; i < ready && entries < MAX_ENTRIES; i++) {
        uint64_t data = self->events[i].data.u64;
        int fd = (int)(uint32_t)data;
        int parse = (int)((data >> 32) & 1);
        PyObject *token = PyLong_FromUnsignedLongLong(data >> 33);
        if (token == NULL)
            goto fail;
        int rc;
        if (parse) {
            Py_ssize_t at = (Py_ssize_t)(data >> 34);
            Inbound *lane = fast && at < self->nlanes ? (Inbound *)self->lanes[at] : NULL;
            rc = read_socket(self, fd, token, out, MAX_ENTRIES - entries, lane, now,
                             offset);
        } else {
            PyObject *entry = PyTuple_Pack(5, token, Py_None, Py_None, Py_None, Py_None);
            rc = entry ? PyList_Append(out, entry) : -1;
            Py_XDECREF(entry);
            rc = rc < 0 ? -1 : 1;
        }
        Py_DECREF(token);
        if (rc < 0)
            goto fail;
        entries += rc;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *Poller_poll(Poller *self, PyObject *Py_UNUSED(ignored)) {
    return gather(self, 0, 0.0, 0.0);
}

static PyObject *Poller_receive(Poller *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "receive(now, offset)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[0]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    double offset = PyFloat_AsDouble(args[1]);
    if (offset == -1.0 && PyErr_Occurred())
        return NULL;
    return gather(self, 1, now, offset);
}

static PyObject *Poller_read(Poller *self, PyObject *args) {
    int fd;
    unsigned long long value;
    if (!PyArg_ParseTuple(args, "iK", &fd, &value))
        return NULL;
    PyObject *token = PyLong_FromUnsignedLongLong(value);
    PyObject *out = token ? PyList_New(0) : NULL;
    if (out == NULL) {
        Py_XDECREF(token);
        return NULL;
    }
    int entries = 0;
    while (entries < MAX_ENTRIES) {
        int n = read_socket(self, fd, token, out, MAX_ENTRIES - entries, NULL, 0.0, 0.0);
        if (n < 0) {
            Py_DECREF(token);
            Py_DECREF(out);
            return NULL;
        }
        entries += n;
        if (n < PER_SOCKET)
            break; /* what was queued is read */
    }
    Py_DECREF(token);
    return out;
}

static int sockaddr_of(PyObject *host, int port, struct sockaddr_storage *sa,
                       socklen_t *len) {
    const char *name = PyUnicode_AsUTF8(host);
    if (name == NULL)
        return -1;
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
    if (port < 0 || port > 65535) {
        *len = 0;
    } else if (inet_pton(AF_INET, name, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
    } else if (inet_pton(AF_INET6, name, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else {
        *len = 0; /* not an address: EINVAL, as a send error */
    }
    return 0;
}

static PyObject *rtpio_send(PyObject *Py_UNUSED(module), PyObject *packets) {
    if (!PyList_Check(packets)) {
        PyErr_SetString(PyExc_TypeError, "send() takes a list of packets");
        return NULL;
    }
    PyObject *failures = PyList_New(0);
    if (failures == NULL)
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(packets);
    int fds[SEND_CHUNK], errs[SEND_CHUNK];
    const char *bufs[SEND_CHUNK];
    Py_ssize_t sizes[SEND_CHUNK];
    struct sockaddr_storage addrs[SEND_CHUNK];
    socklen_t lens[SEND_CHUNK];
    for (Py_ssize_t base = 0; base < total; base += SEND_CHUNK) {
        Py_ssize_t n = total - base < SEND_CHUNK ? total - base : SEND_CHUNK;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(packets, base + i);
            PyObject *owner, *data, *host, *size;
            int port;
            if (!PyTuple_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "send(): each packet is a tuple");
                Py_DECREF(failures);
                return NULL;
            }
            if (!PyArg_ParseTuple(item, "OiS(Ui)O", &owner, &fds[i], &data, &host, &port,
                                  &size) ||
                sockaddr_of(host, port, &addrs[i], &lens[i]) < 0) {
                Py_DECREF(failures);
                return NULL;
            }
            bufs[i] = PyBytes_AS_STRING(data);
            sizes[i] = PyBytes_GET_SIZE(data);
        }
        /* `packets` holds every bytes object: the buffers stay valid without the GIL */
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            errs[i] = 0;
            if (lens[i] == 0)
                errs[i] = EINVAL;
            else if (sendto(fds[i], bufs[i], (size_t)sizes[i], MSG_DONTWAIT,
                            (const struct sockaddr *)&addrs[i], lens[i]) < 0)
                errs[i] = errno;
        }
        Py_END_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            if (errs[i] == 0)
                continue;
            PyObject *f = Py_BuildValue("(ni)", base + i, errs[i]);
            if (f == NULL || PyList_Append(failures, f) < 0) {
                Py_XDECREF(f);
                Py_DECREF(failures);
                return NULL;
            }
            Py_DECREF(f);
        }
    }
    return failures;
}

static PyMethodDef Poller_methods[] = {
    {"fileno", (PyCFunction)Poller_fileno, METH_NOARGS, "The epoll set's fd."},
    {"close", (PyCFunction)Poller_close, METH_NOARGS, "Close the epoll set."},
    {"add", (PyCFunction)Poller_add, METH_VARARGS, "add(fd, token, parse)"},
    {"enable", (PyCFunction)Poller_enable, METH_VARARGS, "enable(fd, token, parse, on)"},
    {"remove", (PyCFunction)Poller_remove, METH_VARARGS, "remove(fd)"},
    {"poll", (PyCFunction)Poller_poll, METH_NOARGS, "Read every ready socket."},
    {"receive", (PyCFunction)(void (*)(void))Poller_receive, METH_FASTCALL,
     "receive(now, offset): poll(), ordinary packets of attached sockets taken in C."},
    {"attach", (PyCFunction)Poller_attach, METH_VARARGS,
     "attach(token, inbound): the receive state of the RTP socket `token` (None: none)."},
    {"read", (PyCFunction)Poller_read, METH_VARARGS, "read(fd, token): one socket's queue."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PollerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sipbridge.media._rtpio.Poller",
    .tp_basicsize = sizeof(Poller),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The RTP sockets of every call in one epoll set.",
    .tp_new = Poller_new,
    .tp_dealloc = (destructor)Poller_dealloc,
    .tp_methods = Poller_methods,
};

static PyMethodDef module_methods[] = {
    {"parse", rtpio_parse_py, METH_O, "parse(data): parse_rtp's outcome, as a tuple"},
    {"send", rtpio_send, METH_O, "send([(owner, fd, data, (host, port), size)]) -> [(index, errno)]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rtpio", "Batched RTP socket I/O.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rtpio(void) {
    if (PyType_Ready(&PollerType) < 0 || reception_ready() < 0)
        return NULL;
    /* PyCapsule_Import only looks attributes up past the first name: import it first */
    PyObject *jitter = PyImport_ImportModule("sipbridge.media._jitter");
    Py_XDECREF(jitter);
    jitter_api = jitter ? PyCapsule_Import(FM_JITTER_CAPSULE, 0) : NULL;
    if (jitter_api == NULL)
        PyErr_Clear(); /* _jitter not built: every packet goes to its session */
    reason_short = PyUnicode_InternFromString("short");
    reason_version = PyUnicode_InternFromString("version");
    reason_truncated = PyUnicode_InternFromString("truncated");
    reason_padding = PyUnicode_InternFromString("padding");
    reason_socket_error = PyUnicode_InternFromString("socket_error");
    empty_tuple = PyTuple_New(0);
    if (!reason_short || !reason_version || !reason_truncated || !reason_padding ||
        !reason_socket_error || !empty_tuple)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Poller", (PyObject *)&PollerType) < 0 ||
        PyModule_AddObjectRef(m, "ReceptionStats", (PyObject *)&RxStatsType) < 0 ||
        PyModule_AddObjectRef(m, "Inbound", (PyObject *)&InboundType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
