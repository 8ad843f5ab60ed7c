/* A byte stream between two C processes through a Cosh pipe (cosh_pipe_*): the sender writes
 * a known sequence in pieces of changing sizes, the receiver checks every byte and the total.
 * Usage: stream SOCKET NAME send|recv MIB */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cosh.h"

static unsigned char at(uint64_t k) { return (unsigned char)((k * 7 + (k >> 12)) % 251); }

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int send = strcmp(argv[3], "send") == 0;
    uint64_t total = (uint64_t)atoi(argv[4]) << 20;
    /* A small window: the sender must wait for the receiver's credit. */
    cosh_pipe *p = cosh_pipe_open(argv[1], argv[2], send, 20000, 1 << 20);
    if (!p) { fprintf(stderr, "open: %s\n", cosh_last_error()); return 1; }
    unsigned char *buf = malloc(1 << 20);
    uint64_t done = 0;
    if (send) {
        size_t sizes[] = { 1, 4096, 100000, 65536, 777, 1 << 20 };
        for (int i = 0; done < total; i++) {
            size_t n = sizes[i % 6];
            if (n > total - done) n = (size_t)(total - done);
            for (size_t k = 0; k < n; k++) buf[k] = at(done + k);
            if (cosh_pipe_write(p, buf, n) != (int64_t)n) { fprintf(stderr, "write: %s\n", cosh_last_error()); return 1; }
            done += n;
        }
    } else {
        int64_t n;
        while ((n = cosh_pipe_read(p, buf, 1 << 20)) > 0) {
            for (int64_t k = 0; k < n; k++)
                if (buf[k] != at(done + (uint64_t)k)) { fprintf(stderr, "byte %llu is wrong\n", (unsigned long long)(done + (uint64_t)k)); return 1; }
            done += (uint64_t)n;
        }
        if (n < 0) { fprintf(stderr, "read: %s\n", cosh_last_error()); return 1; }
        if (done != total) { fprintf(stderr, "%llu bytes, not %llu\n", (unsigned long long)done, (unsigned long long)total); return 1; }
    }
    if (cosh_pipe_close(p) != COSH_OK) { fprintf(stderr, "close: %s\n", cosh_last_error()); return 1; }
    if (cosh_pipe_close(p) != COSH_ERR_BAD_HANDLE) { fprintf(stderr, "closed twice\n"); return 1; }
    free(buf);
    printf("%s %llu bytes\n", send ? "sent" : "received", (unsigned long long)done);
    return 0;
}
