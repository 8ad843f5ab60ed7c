/* The paper's CoshFS handlers (section 5), in C against cosh.h: a file system process keeps
 * one file as an aggregate, rebuilt by write_handler with select and concat from data a
 * client sends by strong move with a ticket, and handed out by read_handler as a weak share.
 * Requests and tickets travel as lines on stdin/stdout, as IPC messages would.
 * Usage: fs SOCKET server | fs SOCKET client ROUNDS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cosh.h"

typedef struct { cosh_domainid domainid; } client;
typedef uint64_t inode_t;

static cosh_agg *the_file;

static cosh_agg *lookup_inode(client *cl, inode_t inode) {
    (void)cl; (void)inode;
    cosh_agg_incref(the_file);
    return the_file;
}

static void update_inode(inode_t inode, cosh_agg *newfile) {
    (void)inode;
    cosh_agg_decref(the_file);
    the_file = newfile;
}

/* The paper's write_handler; the special case (a write past the end) extends the file with
 * zeros first. */
static int write_handler(client *cl, inode_t inode, size_t offset, cosh_attach_ticket tkt) {
    cosh_agg *wdata; cosh_tx_mode mode; cosh_tx_flags flags;
    if (cosh_attach_recv(cl->domainid, tkt, &mode, &flags, &wdata) != COSH_OK) return -1;
    if ((flags & COSH_TRANSFER_WEAK)) { cosh_agg_decref(wdata); return -1; }
    cosh_agg *file = lookup_inode(cl, inode);
    cosh_agg *newfile;
    size_t flen = cosh_agg_getlen(file);
    size_t wlen = cosh_agg_getlen(wdata);
    if (offset + wlen > flen) {
        /* Special case: past the end. Zeros up to the offset, then the data. */
        cosh_agg *pre = cosh_agg_select(file, 0, offset < flen ? offset : flen);
        cosh_agg *base = pre;
        if (offset > flen) {
            cosh_agg *zeros = cosh_agg_alloc(offset - flen);
            base = cosh_agg_concat(pre, zeros);
            cosh_agg_decref(zeros);
            cosh_agg_decref(pre);
        }
        newfile = cosh_agg_concat(base, wdata);
        cosh_agg_decref(base);
    } else {
        /* General case: construct aggregate for modified file. */
        cosh_agg *pre = cosh_agg_select(file, 0, offset);
        cosh_agg *post = cosh_agg_select(file, offset + wlen, flen - (offset + wlen));
        cosh_agg *tmp = cosh_agg_concat(pre, wdata);
        newfile = cosh_agg_concat(tmp, post);
        cosh_agg_decref(pre);
        cosh_agg_decref(post);
        cosh_agg_decref(tmp);
    }
    cosh_agg_decref(wdata);
    if (!newfile) return -1;
    update_inode(inode, newfile);
    cosh_agg_decref(file);
    return 0;
}

/* The paper's read_handler. */
static int read_handler(client *cl, inode_t inode, size_t offset, size_t bytes,
                        cosh_attach_ticket *ret_tkt, size_t *ret_len) {
    cosh_agg *file = lookup_inode(cl, inode);
    size_t flen = cosh_agg_getlen(file);
    size_t len = offset < flen ? (flen - offset < bytes ? flen - offset : bytes) : 0;
    *ret_len = len;
    int rc = 0;
    if (len > 0) {
        cosh_agg *agg = cosh_agg_select(file, offset, len);
        rc = cosh_attach_transfer(agg, cl->domainid, COSH_SHARE, COSH_TRANSFER_WEAK, ret_tkt);
        cosh_agg_decref(agg);
    }
    cosh_agg_decref(file);
    return rc;
}

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, cosh_last_error());
    return 1;
}

static int server(void) {
    if (cosh_name_register("c-fs") != COSH_OK) return fail("register");
    the_file = cosh_agg_alloc(0);
    if (!the_file) return fail("alloc");
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long dom, off, tkt, len;
        if (sscanf(line, "W %llu %llu %llu", &dom, &off, &tkt) == 3) {
            client cl = { dom };
            printf(write_handler(&cl, 1, off, tkt) == 0 ? "done\n" : "failed\n");
        } else if (sscanf(line, "R %llu %llu %llu", &dom, &off, &len) == 3) {
            client cl = { dom };
            cosh_attach_ticket t = 0; size_t n = 0;
            if (cosh_trust(dom) != COSH_OK || read_handler(&cl, 1, off, len, &t, &n) != 0)
                printf("failed\n");
            else
                printf("T %llu %zu\n", (unsigned long long)t, n);
        } else {
            break;
        }
        fflush(stdout);
    }
    cosh_agg_decref(the_file);
    cosh_disconnect();
    return 0;
}

static int client_main(int rounds) {
    cosh_domainid fs;
    if (cosh_name_lookup("c-fs", 10000, &fs) != COSH_OK) return fail("lookup");
    if (cosh_trust(fs) != COSH_OK) return fail("trust");
    cosh_domainid me = cosh_domain_id();
    size_t cap = 1 << 20;
    unsigned char *model = calloc(cap, 1), *buf = malloc(cap);
    size_t flen = 0;
    char line[256];
    srand(7);
    for (int r = 0; r < rounds; r++) {
        size_t off = (size_t)(rand() % 60000), wlen = 1 + (size_t)(rand() % 20000);
        for (size_t k = 0; k < wlen; k++) buf[k] = (unsigned char)(rand() & 0xff);
        cosh_agg *data = cosh_agg_alloc(wlen);
        if (!data || cosh_agg_write(data, 0, buf, wlen) != COSH_OK) return fail("data");
        cosh_attach_ticket t;
        if (cosh_attach_transfer(data, fs, COSH_MOVE, COSH_TRANSFER_STRONG, &t) != COSH_OK)
            return fail("attach_transfer");
        /* After a strong move the sender keeps no rights. */
        if (cosh_agg_getrights(data) != COSH_RIGHTS_NONE) return fail("rights after move");
        if (cosh_agg_decref(data) != COSH_OK) return fail("release after move");
        printf("W %llu %zu %llu\n", (unsigned long long)me, off, (unsigned long long)t);
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin) || strcmp(line, "done\n") != 0) return fail("write");
        memcpy(model + off, buf, wlen);
        if (off + wlen > flen) flen = off + wlen;
        /* Read the whole file back: a weak share of the file system's aggregate. */
        printf("R %llu 0 %zu\n", (unsigned long long)me, cap);
        fflush(stdout);
        unsigned long long rt; size_t n;
        if (!fgets(line, sizeof line, stdin) || sscanf(line, "T %llu %zu", &rt, &n) != 2)
            return fail("read");
        if (n != flen) { fprintf(stderr, "read %zu bytes, the file has %zu\n", n, flen); return 1; }
        cosh_agg *got; cosh_tx_mode mode; cosh_tx_flags flags;
        if (cosh_attach_recv(fs, rt, &mode, &flags, &got) != COSH_OK) return fail("attach_recv");
        if (mode != COSH_SHARE || !(flags & COSH_TRANSFER_WEAK)) return fail("mode");
        if (cosh_agg_read(got, 0, buf, n) != COSH_OK) return fail("read bytes");
        if (memcmp(buf, model, n) != 0) { fprintf(stderr, "round %d: wrong bytes\n", r); return 1; }
        /* A share is read-only: writing through it is refused. */
        if (cosh_agg_write(got, 0, "x", 1) != COSH_ERR_RIGHTS) return fail("write to a share");
        cosh_agg_decref(got);
    }
    printf("Q\n");
    fflush(stdout);
    free(model); free(buf);
    cosh_disconnect();
    fprintf(stderr, "fs client: %d rounds exact\n", rounds);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: fs SOCKET server | fs SOCKET client ROUNDS\n"); return 2; }
    int is_server = strcmp(argv[2], "server") == 0;
    if (cosh_connect_at(is_server ? "c-fs" : "c-fs-client", argv[1]) != COSH_OK) return fail("connect");
    return is_server ? server() : client_main(argc > 3 ? atoi(argv[3]) : 20);
}
