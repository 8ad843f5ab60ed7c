/* The paper's pipe (section 5), in C against cosh.h: a producer process sends aggregates to
 * a consumer process by strong move; the consumer checks every byte.
 * Usage: pipe SOCKET consumer COUNT | pipe SOCKET producer COUNT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cosh.h"

typedef struct { cosh_domainid dest; } wpipe;
typedef struct { cosh_domainid src; } rpipe;

/* The paper's pipe_write: hand the data off, and the reference with it. */
static void pipe_write(wpipe *pipe, cosh_agg *agg) {
    cosh_agg_transfer(agg, pipe->dest, COSH_MOVE, COSH_TRANSFER_STRONG);
    cosh_agg_decref(agg);
}

/* The paper's pipe_read: anything but a strong move is a protocol error. */
static cosh_agg *pipe_read(rpipe *pipe) {
    cosh_agg *agg; cosh_tx_mode mode; cosh_tx_flags flags;
    if (cosh_agg_receive(pipe->src, &agg, &mode, &flags) != COSH_OK) return NULL;
    if (mode != COSH_MOVE || (flags & COSH_TRANSFER_WEAK)) {
        cosh_agg_decref(agg); return NULL;
    }
    return agg;
}

#define PIECE 65536

static unsigned char pattern(int i, size_t k) { return (unsigned char)((i * 31 + k) % 251); }

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, cosh_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: pipe SOCKET consumer|producer COUNT\n"); return 2; }
    int count = atoi(argv[3]);
    int consumer = strcmp(argv[2], "consumer") == 0;
    if (cosh_connect_at(consumer ? "c-consumer" : "c-producer", argv[1]) != COSH_OK)
        return fail("connect");
    if (consumer) {
        if (cosh_name_register("c-pipe-consumer") != COSH_OK) return fail("register");
        rpipe in = { COSH_ANY_DOMAIN };
        unsigned char *buf = malloc(PIECE);
        for (int i = 0; i < count; i++) {
            cosh_agg *agg = pipe_read(&in);
            if (!agg) return fail("pipe_read");
            if (cosh_agg_getlen(agg) != PIECE) return fail("length");
            if (cosh_agg_getrights(agg) != COSH_RIGHTS_READ_WRITE) return fail("rights");
            /* Read in place, piece by piece. */
            cosh_agg_iter *it = cosh_agg_iter_start(agg, 0, 0);
            if (!it) return fail("iter_start");
            void *base; size_t len; size_t at = 0; int got;
            while ((got = cosh_agg_iter_next(it, &base, &len)) == 1) {
                for (size_t k = 0; k < len; k++)
                    if (((unsigned char *)base)[k] != pattern(i, at + k)) {
                        fprintf(stderr, "byte %zu of aggregate %d is wrong\n", at + k, i);
                        return 1;
                    }
                at += len;
            }
            if (got != 0 || at != PIECE) return fail("iter_next");
            cosh_agg_iter_end(it);
            cosh_agg_decref(agg);
        }
        free(buf);
        printf("received %d\n", count);
    } else {
        wpipe out;
        if (cosh_name_lookup("c-pipe-consumer", 10000, &out.dest) != COSH_OK) return fail("lookup");
        unsigned char *buf = malloc(PIECE);
        for (int i = 0; i < count; i++) {
            cosh_agg *agg = cosh_agg_alloc(PIECE);
            if (!agg) return fail("alloc");
            for (size_t k = 0; k < PIECE; k++) buf[k] = pattern(i, k);
            if (cosh_agg_write(agg, 0, buf, PIECE) != COSH_OK) return fail("write");
            pipe_write(&out, agg);
        }
        free(buf);
        printf("sent %d\n", count);
    }
    cosh_disconnect();
    return 0;
}
