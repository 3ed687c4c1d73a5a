/* Diagnostic only, not used by the bench: an LD_PRELOAD shim that sets TCP_NODELAY on every
 * TCP socket a process connects, to show what Nagle's algorithm costs a client that does not
 * set it (rskafka 0.6: see BENCHMARKS.md, "Gateway").
 *
 *   cc -shared -fPIC -O2 -o /tmp/nodelay.so tests/benches/nodelay.c -ldl
 *   LD_PRELOAD=/tmp/nodelay.so $CARGO_TARGET_DIR/release/deps/gateway-<hash> --only drain,latency --no-build
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = dlsym(RTLD_NEXT, "connect");
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return real(fd, addr, len);
}
