/* Bad handles, wrong rights and double releases: every one an error code, never a crash.
 * Usage: misuse SOCKET */
#include <stdio.h>
#include <string.h>

#include "cosh.h"

static int failures;

#define EXPECT(call, code) do { \
    int got_ = (call); \
    if (got_ != (code)) { \
        fprintf(stderr, "line %d: %s gave %d, not %d (%s)\n", __LINE__, #call, got_, (code), cosh_last_error()); \
        failures++; \
    } \
} while (0)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    /* Nothing works before connecting. */
    EXPECT(cosh_agg_decref(cosh_agg_alloc(8)), COSH_ERR_BAD_HANDLE);
    EXPECT(cosh_connect_at(NULL, argv[1]), COSH_ERR_INVALID);
    EXPECT(cosh_connect_at("c-misuse", argv[1]), COSH_OK);
    EXPECT(cosh_connect_at("again", argv[1]), COSH_ERR_EXISTS);

    cosh_agg *a = cosh_agg_alloc(4096);
    if (!a) { fprintf(stderr, "alloc: %s\n", cosh_last_error()); return 1; }
    /* Handles that are not handles. */
    EXPECT(cosh_agg_incref(NULL), COSH_ERR_BAD_HANDLE);
    EXPECT(cosh_agg_incref((cosh_agg *)&failures), COSH_ERR_BAD_HANDLE);
    EXPECT(cosh_agg_incref((cosh_agg *)(uintptr_t)0xdeadbeef), COSH_ERR_BAD_HANDLE);
    EXPECT(cosh_agg_getlen(NULL) == (size_t)-1 ? 0 : 1, 0);
    EXPECT(cosh_agg_select((cosh_agg *)0x10, 0, 1) == NULL ? 0 : 1, 0);
    EXPECT(cosh_agg_iter_end((cosh_agg_iter *)0x1234), COSH_ERR_BAD_HANDLE);
    /* Bad arguments. */
    EXPECT(cosh_agg_transfer(a, cosh_domain_id(), 42, COSH_TRANSFER_STRONG), COSH_ERR_INVALID);
    EXPECT(cosh_agg_transfer(a, cosh_domain_id(), COSH_MOVE, 0x80), COSH_ERR_INVALID);
    EXPECT(cosh_agg_write(a, 0, NULL, 10), COSH_ERR_INVALID);
    EXPECT(cosh_agg_read(a, 4000, (char[200]){0}, 200), COSH_ERR_RANGE);
    EXPECT(cosh_agg_select(a, 4000, 200) == NULL ? 0 : 1, 0);
    EXPECT(cosh_agg_downgrade(a, 7), COSH_ERR_INVALID);
    EXPECT(cosh_agg_receive(COSH_ANY_DOMAIN, NULL, NULL, NULL), COSH_ERR_INVALID);
    cosh_domainid nobody;
    EXPECT(cosh_name_lookup("nobody-has-this-name", 0, &nobody), COSH_ERR_NOT_FOUND);
    /* Wrong rights: read-only after a downgrade, and rights never go up again. */
    EXPECT(cosh_agg_write(a, 0, "data", 4), COSH_OK);
    EXPECT(cosh_agg_downgrade(a, COSH_RIGHTS_READ), COSH_OK);
    EXPECT((int)cosh_agg_getrights(a), COSH_RIGHTS_READ);
    EXPECT(cosh_agg_write(a, 0, "more", 4), COSH_ERR_RIGHTS);
    EXPECT(cosh_agg_iter_start(a, 0, 1) == NULL ? 0 : 1, 0);
    EXPECT(cosh_agg_downgrade(a, COSH_RIGHTS_READ_WRITE), COSH_ERR_RIGHTS);
    /* What can still be done with it works. */
    char back[4];
    EXPECT(cosh_agg_read(a, 0, back, 4), COSH_OK);
    EXPECT(memcmp(back, "data", 4), 0);
    cosh_agg *part = cosh_agg_select(a, 1, 2);
    EXPECT(part ? 0 : 1, 0);
    cosh_agg *related[4]; size_t n = 0;
    EXPECT(cosh_agg_find_related(a, COSH_RIGHTS_READ, related, 4, &n), COSH_OK);
    EXPECT(n >= 1 ? 0 : 1, 0);
    for (size_t i = 0; i < n && i < 4; i++) EXPECT(cosh_agg_decref(related[i]), COSH_OK);
    EXPECT(cosh_agg_decref(part), COSH_OK);
    /* Double releases. */
    EXPECT(cosh_agg_decref(a), COSH_OK);
    EXPECT(cosh_agg_decref(a), COSH_ERR_BAD_HANDLE);
    EXPECT(cosh_agg_decref(part), COSH_ERR_BAD_HANDLE);
    cosh_agg_iter *it = cosh_agg_iter_start(cosh_agg_alloc(1), 0, 0);
    EXPECT(cosh_agg_iter_end(it), COSH_OK);
    EXPECT(cosh_agg_iter_end(it), COSH_ERR_BAD_HANDLE);
    if (strlen(cosh_last_error()) == 0) { fprintf(stderr, "no message\n"); failures++; }
    EXPECT(cosh_disconnect(), COSH_OK);
    EXPECT(cosh_disconnect(), COSH_ERR_NOT_CONNECTED);
    if (failures) return 1;
    printf("misuse: every call refused as it should be\n");
    return 0;
}
