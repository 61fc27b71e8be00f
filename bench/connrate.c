/* Load generator and responders of bench_conn_rate.py: new connections per second.
 *
 * Compiled by the bench at run time with the system C compiler into a temp dir
 * (cc -O2 -o DIR/connrate connrate.c); a Python client tops out near 17.6k new flows/s,
 * which is below what the kernel's own paths do, so the generator must be cheaper than
 * every switch it measures.
 *
 *   connrate udp-echo   BIND_IP PORT_BASE NPORTS
 *   connrate tcp-server BIND_IP PORT_BASE NPORTS
 *       responders: NPORTS sockets on PORT_BASE.., one epoll loop; UDP datagrams are
 *       echoed in batches (recvmmsg / sendmmsg), TCP connections accepted and closed.
 *       Print "ready" once listening, run until killed.
 *   connrate udp|tcp SRC_IP DST_IP PORT_BASE NPORTS SPORT_LO SPORT_HI INFLIGHT
 *                    WARMUP_S SECONDS TIMEOUT_MS FIRST_INDEX
 *       the client: INFLIGHT connections at all times, each a NEW 5-tuple: connection i
 *       (counting from FIRST_INDEX, so that a later run on the same switch stays new)
 *       uses destination port PORT_BASE + i % NPORTS and source port SPORT_LO +
 *       (i / NPORTS) % (SPORT_HI - SPORT_LO + 1), so a tuple repeats only after
 *       NPORTS * (SPORT_HI - SPORT_LO + 1) connections.
 *       udp: a socket bound to the source port and connected to the destination sends
 *            one datagram; the setup is done when the echo comes back.
 *       tcp: a non-blocking connect(); the setup is done when the handshake completes
 *            (writable, SO_ERROR 0); the socket is then closed with a RST (SO_LINGER 0:
 *            no TIME_WAIT, so source ports can be reused later).
 *       Setup latency = send/connect to echo/established.  After WARMUP_S seconds,
 *       SECONDS seconds are measured; prints one line of key=value pairs:
 *       setups, failed (timed out / refused / bind errors), seconds, rate, p50_us,
 *       p90_us, p99_us, max_us.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SAMPLES (16 * 1024 * 1024)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static struct sockaddr_in addr_of(const char *ip, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

/* ------------------------------------------------------------------ responders */

static int responder(int udp, const char *ip, int base, int nports)
{
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nports; i++) {
        int s = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
        int one = 1;
        if (s < 0)
            die("socket");
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (udp) {
            int buf = 4 << 20;
            setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
        }
        struct sockaddr_in a = addr_of(ip, base + i);
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
            die("bind");
        if (!udp && listen(s, 4096) < 0)
            die("listen");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0)
            die("epoll_ctl");
    }
    printf("ready\n");
    fflush(stdout);

    static char bufs[BATCH][256];
    static struct mmsghdr msgs[BATCH];
    static struct iovec iovs[BATCH];
    static struct sockaddr_in peers[BATCH];
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            int s = evs[e].data.fd;
            if (!udp) {
                for (;;) {
                    int c = accept4(s, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0)
                        break;
                    close(c);
                }
                continue;
            }
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    iovs[i].iov_base = bufs[i];
                    iovs[i].iov_len = sizeof(bufs[i]);
                    memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
                    msgs[i].msg_hdr.msg_iov = &iovs[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                    msgs[i].msg_hdr.msg_name = &peers[i];
                    msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
                }
                int got = recvmmsg(s, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0)
                    break;
                for (int i = 0; i < got; i++)
                    iovs[i].iov_len = msgs[i].msg_len;
                int sent = 0;
                while (sent < got) {
                    int r = sendmmsg(s, msgs + sent, got - sent, 0);
                    if (r <= 0)
                        break;  /* a full queue: the client times it out */
                    sent += r;
                }
                if (got < BATCH)
                    break;
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- client */

struct slot {
    int fd;
    double started;
};

struct client {
    int udp, ep, inflight, nports, base, sport_lo, span;
    struct sockaddr_in src, dst;
    uint64_t next;          /* index of the next new connection */
    double timeout;
    double window_start, window_end;
    uint64_t setups, failed;
    uint32_t *samples;      /* setup latencies in the window, ns / 100 (0.1 us units) */
    uint64_t nsamples;
    struct slot *slots;
};

static void count_fail(struct client *c, double t)
{
    if (t >= c->window_start && t < c->window_end)
        c->failed++;
}

static void open_slot(struct client *c, int i)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        uint64_t k = c->next++;
        int dport = c->base + (int)(k % (uint64_t)c->nports);
        int sport = c->sport_lo + (int)((k / (uint64_t)c->nports) % (uint64_t)c->span);
        int s = socket(AF_INET, (c->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
        if (s < 0)
            die("socket");
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in src = c->src, dst = c->dst;
        src.sin_port = htons((uint16_t)sport);
        dst.sin_port = htons((uint16_t)dport);
        double t = now_s();
        if (bind(s, (struct sockaddr *)&src, sizeof(src)) < 0) {
            close(s);           /* port busy (e.g. the kernel still holds it): next */
            count_fail(c, t);
            continue;
        }
        int r = connect(s, (struct sockaddr *)&dst, sizeof(dst));
        if (r < 0 && errno != EINPROGRESS) {
            close(s);
            count_fail(c, t);
            continue;
        }
        c->slots[i].fd = s;
        c->slots[i].started = t;
        if (c->udp) {
            uint64_t payload[2] = {k, 0};
            if (send(s, payload, sizeof(payload), 0) < 0) {
                close(s);
                c->slots[i].fd = -1;
                count_fail(c, t);
                continue;
            }
        }
        struct epoll_event ev = {.events = c->udp ? EPOLLIN : EPOLLOUT, .data.u32 = (uint32_t)i};
        if (epoll_ctl(c->ep, EPOLL_CTL_ADD, s, &ev) < 0)
            die("epoll_ctl");
        return;
    }
    fprintf(stderr, "16 connections in a row could not be opened\n");
    exit(3);
}

static void close_slot(struct client *c, int i, int reset)
{
    int s = c->slots[i].fd;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(s);               /* also leaves the epoll set */
    c->slots[i].fd = -1;
}

static void finish(struct client *c, int i, int ok, double t)
{
    double started = c->slots[i].started;
    close_slot(c, i, !c->udp);
    if (started >= c->window_start && started < c->window_end) {
        if (ok) {
            c->setups++;
            if (c->nsamples < MAX_SAMPLES) {
                double v = (t - started) * 1e7;
                c->samples[c->nsamples++] = v > 4e9 ? 4000000000u : (uint32_t)v;
            }
        } else {
            c->failed++;
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint32_t *s, uint64_t n, double q)
{
    if (n == 0)
        return -1;
    uint64_t k = (uint64_t)(q * (double)(n - 1) + 0.5);
    return s[k] / 10.0;
}

static int client(int udp, char **argv)
{
    struct client c;
    memset(&c, 0, sizeof(c));
    c.udp = udp;
    c.src = addr_of(argv[0], 0);
    c.dst = addr_of(argv[1], 0);
    c.base = atoi(argv[2]);
    c.nports = atoi(argv[3]);
    c.sport_lo = atoi(argv[4]);
    c.span = atoi(argv[5]) - c.sport_lo + 1;
    c.inflight = atoi(argv[6]);
    double warmup = atof(argv[7]), seconds = atof(argv[8]);
    c.timeout = atof(argv[9]) / 1000.0;
    c.next = strtoull(argv[10], NULL, 10);
    if (c.nports < 1 || c.span < 1 || c.inflight < 1 || seconds <= 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    c.samples = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    c.slots = calloc((size_t)c.inflight, sizeof(struct slot));
    c.ep = epoll_create1(0);
    if (!c.samples || !c.slots || c.ep < 0)
        die("setup");
    double t0 = now_s();
    c.window_start = t0 + warmup;
    c.window_end = c.window_start + seconds;
    for (int i = 0; i < c.inflight; i++)
        open_slot(&c, i);
    struct epoll_event evs[256];
    double next_scan = t0 + 0.01;
    for (;;) {
        int n = epoll_wait(c.ep, evs, 256, 5);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        double t = now_s();
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            int s = c.slots[i].fd;
            if (s < 0)
                continue;
            int ok;
            if (udp) {
                char buf[64];
                ok = recv(s, buf, sizeof(buf), MSG_DONTWAIT) > 0;
                if (!ok && (errno == EAGAIN || errno == EINTR))
                    continue;
            } else {
                int err = 0;
                socklen_t len = sizeof(err);
                getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
                ok = err == 0;
            }
            finish(&c, i, ok, t);
            if (t < c.window_end)
                open_slot(&c, i);
        }
        if (t >= next_scan) {           /* time-outs */
            for (int i = 0; i < c.inflight; i++) {
                if (c.slots[i].fd >= 0 && t - c.slots[i].started > c.timeout) {
                    finish(&c, i, 0, t);
                    if (t < c.window_end)
                        open_slot(&c, i);
                }
            }
            next_scan = t + 0.01;
        }
        if (t >= c.window_end) {
            int open = 0;
            for (int i = 0; i < c.inflight; i++)
                open += c.slots[i].fd >= 0;
            if (!open || t >= c.window_end + c.timeout)
                break;
        }
    }
    qsort(c.samples, c.nsamples, sizeof(uint32_t), cmp_u32);
    printf("setups=%llu failed=%llu seconds=%.3f rate=%.1f p50_us=%.1f p90_us=%.1f "
           "p99_us=%.1f max_us=%.1f connections=%llu\n",
           (unsigned long long)c.setups, (unsigned long long)c.failed, seconds,
           c.setups / seconds, pct(c.samples, c.nsamples, 0.5),
           pct(c.samples, c.nsamples, 0.9), pct(c.samples, c.nsamples, 0.99),
           c.nsamples ? c.samples[c.nsamples - 1] / 10.0 : -1.0,
           (unsigned long long)c.next);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && !strcmp(argv[1], "udp-echo"))
        return responder(1, argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "tcp-server"))
        return responder(0, argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 13 && (!strcmp(argv[1], "udp") || !strcmp(argv[1], "tcp")))
        return client(!strcmp(argv[1], "udp"), argv + 2);
    fprintf(stderr, "usage: see the comment at the top of connrate.c\n");
    return 2;
}
