/* A C program using CoshFS through libcosh's file calls: directories, files written small and
 * large, read back byte for byte, attributes, renames, removals, and the errno values of what
 * fails. Usage: fsclient BLOCK_MANAGER_SOCKET COSHFS_SOCKET */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cosh.h"

static int failures;

#define EXPECT(cond) do { \
    if (!(cond)) { fprintf(stderr, "line %d: %s (%s)\n", __LINE__, #cond, cosh_last_error()); failures++; } \
} while (0)

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    cosh_fs *fs = cosh_fs_connect("c-fs-client", argv[1], argv[2]);
    if (!fs) { fprintf(stderr, "connect: %s\n", cosh_last_error()); return 1; }
    EXPECT(cosh_fs_mkdir(fs, "/d") == 0);
    EXPECT(cosh_fs_mkdir(fs, "/d") == -EEXIST);
    int64_t f = cosh_fs_open(fs, "/d/f", COSH_FS_CREATE | COSH_FS_EXCL, 0600);
    EXPECT(f >= 0);
    EXPECT(cosh_fs_open(fs, "/d/f", COSH_FS_CREATE | COSH_FS_EXCL, 0) == -EEXIST);
    EXPECT(cosh_fs_open(fs, "/d/missing", 0, 0) == -ENOENT);
    /* Small writes (made behind) and a large one, then every byte back. */
    size_t big = 3 << 20;
    unsigned char *model = calloc(big + 100, 1), *back = malloc(big + 100);
    for (int i = 0; i < 100; i++) {
        unsigned char b[37];
        for (size_t k = 0; k < sizeof b; k++) b[k] = (unsigned char)(i + k);
        EXPECT(cosh_fs_write(fs, f, (uint64_t)i * 37, b, sizeof b) == (int64_t)sizeof b);
        memcpy(model + i * 37, b, sizeof b);
    }
    for (size_t k = 0; k < big; k++) model[100 + k] = (unsigned char)(k % 253);
    EXPECT(cosh_fs_write(fs, f, 100, model + 100, big) == (int64_t)big);
    EXPECT(cosh_fs_fsync(fs, f) == 0);
    size_t len = big + 100;
    EXPECT(cosh_fs_read(fs, f, 0, back, len + 50) == (int64_t)len);
    EXPECT(memcmp(back, model, len) == 0);
    EXPECT(cosh_fs_read(fs, f, len, back, 10) == 0);
    cosh_fs_attrs st;
    EXPECT(cosh_fs_stat(fs, NULL, f, &st) == 0 && st.size == len && !st.is_dir && st.mode == 0600);
    EXPECT(cosh_fs_stat(fs, "/d", -1, &st) == 0 && st.is_dir && st.size == 1);
    /* Renamed and removed: the open handle still reads the data. */
    EXPECT(cosh_fs_rename(fs, "/d/f", "/d/g") == 0);
    EXPECT(cosh_fs_stat(fs, "/d/f", -1, &st) == -ENOENT);
    EXPECT(cosh_fs_remove(fs, "/d/g", 0) == 0);
    EXPECT(cosh_fs_read(fs, f, 0, back, 37) == 37 && memcmp(back, model, 37) == 0);
    EXPECT(cosh_fs_remove(fs, "/d", 1) == 0);
    EXPECT(cosh_fs_remove(fs, "/d", 1) == -ENOENT);
    /* Bad handles and arguments. */
    EXPECT(cosh_fs_close(fs, f) == 0);
    EXPECT(cosh_fs_close(fs, f) == -EBADF);
    EXPECT(cosh_fs_read(fs, 12345, 0, back, 1) == -EBADF);
    EXPECT(cosh_fs_read(fs, -1, 0, back, 1) == -EBADF);
    EXPECT(cosh_fs_write(NULL, 0, 0, "x", 1) == -EBADF);
    EXPECT(cosh_fs_mkdir(fs, NULL) == -EINVAL);
    EXPECT(cosh_fs_open(fs, "/x", 0x100, 0) == -EINVAL);
    EXPECT(cosh_fs_disconnect(fs) == 0);
    EXPECT(cosh_fs_disconnect(fs) == -EBADF);
    free(model); free(back);
    if (failures) return 1;
    printf("fs client: every call as it should be\n");
    return 0;
}
