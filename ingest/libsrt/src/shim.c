/* Reads the few statistics jiangtang reports out of libsrt's SRT_TRACEBSTATS, so the Rust
 * side never mirrors that large struct's layout by hand. */
#include <srt/srt.h>
#include <srt/access_control.h>
#include <stdint.h>

typedef struct {
    int64_t packets_received;
    int64_t packets_lost;
    int64_t packets_retransmitted;
    int64_t packets_dropped;
    int64_t packets_undecrypted;
    int64_t packets_belated;
    uint64_t bytes_received;
    double rtt_ms;
    double receive_rate_mbps;
    int64_t tsbpd_delay_ms;
} jt_srt_stats;

int jt_srt_stats_read(SRTSOCKET s, jt_srt_stats *out) {
    SRT_TRACEBSTATS p;
    if (srt_bstats(s, &p, 0) == SRT_ERROR) return -1;
    out->packets_received = p.pktRecvTotal;
    out->packets_lost = p.pktRcvLossTotal;
    out->packets_retransmitted = p.pktRcvRetrans;
    out->packets_dropped = p.pktRcvDropTotal;
    out->packets_undecrypted = p.pktRcvUndecryptTotal;
    out->packets_belated = p.pktRcvBelated;
    out->bytes_received = p.byteRecvTotal;
    out->rtt_ms = p.msRTT;
    out->receive_rate_mbps = p.mbpsRecvRate;
    out->tsbpd_delay_ms = p.msRcvTsbPdDelay;
    return 0;
}

/* The constants src/lib.rs uses, checked against this libsrt's header. */
_Static_assert(SRTO_SNDSYN == 1, "SRTO_SNDSYN");
_Static_assert(SRTO_RCVSYN == 2, "SRTO_RCVSYN");
_Static_assert(SRTO_PASSPHRASE == 26, "SRTO_PASSPHRASE");
_Static_assert(SRTO_RCVLATENCY == 43, "SRTO_RCVLATENCY");
_Static_assert(SRTO_STREAMID == 46, "SRTO_STREAMID");
_Static_assert(SRTO_PEERIDLETIMEO == 55, "SRTO_PEERIDLETIMEO");
_Static_assert(SRT_EPOLL_IN == 0x1 && SRT_EPOLL_ERR == 0x8, "SRT_EPOLL_*");
_Static_assert(SRT_EPOLL_ENABLE_EMPTY == 1, "SRT_EPOLL_ENABLE_EMPTY");
_Static_assert(SRT_EASYNCRCV == 6002 && SRT_ETIMEOUT == 6003, "SRT_ERRNO");
_Static_assert(SRT_ECONNFAIL == 2000 && SRT_ECONNLOST == 2001 && SRT_ENOCONN == 2002, "SRT_ERRNO connection");
_Static_assert(SRT_EINVSOCK == 5004, "SRT_EINVSOCK");
/* RejectCode's named codes. */
_Static_assert(SRT_REJX_BAD_REQUEST == 1400 && SRT_REJX_UNAUTHORIZED == 1401, "SRT_REJX_*");
_Static_assert(SRT_REJX_OVERLOAD == 1402 && SRT_REJX_FORBIDDEN == 1403, "SRT_REJX_*");
_Static_assert(SRT_REJX_NOTFOUND == 1404 && SRT_REJX_BAD_MODE == 1405, "SRT_REJX_*");
_Static_assert(SRT_REJX_CONFLICT == 1409 && SRT_REJX_ISE == 1500, "SRT_REJX_*");
_Static_assert(sizeof(SRTSOCKET) == sizeof(int), "SRTSOCKET");
