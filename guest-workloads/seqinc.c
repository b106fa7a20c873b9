/*
 * seqinc: the writer of the sequential-increment pattern (see seqpage.h).
 *
 * Maps FILE (default /dev/shm/seqinc) MAP_SHARED, initialises every page
 * with counter 0, writes the pid file (its presence means "running"), then
 * repeatedly adds 1 to every page's counter in page order until --duration
 * expires or SIGTERM/SIGINT arrives (it stops between pages, never leaving
 * a torn page behind).  seqcheck inspects the same file.
 */
#define _GNU_SOURCE
#include "common.h"
#include "seqpage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static const char usage[] =
    "usage: seqinc [--size-mib N] [--rate-passes P] [--duration SEC] [--file F]\n"
    "              [--pidfile FILE] [--out FILE]\n"
    "  --size-mib N      size of the pattern (default 64)\n"
    "  --rate-passes P   at most P passes per second (default 0 = as fast as possible)\n"
    "  --duration SEC    stop after SEC seconds (default 0 = until SIGTERM/SIGINT)\n"
    "  --file F          shared file to map (default /dev/shm/seqinc)\n"
    "  --pidfile FILE    written once the pattern is initialised and running\n"
    "  --out FILE        JSON {passes, pages, elapsed_s, ...} written on exit\n";

enum { OPT_RATE_PASSES = WL_OPT_FIRST_EXTRA, OPT_FILE };

struct opts {
    double rate_passes;
    const char *file;
};

static void handle(int code, const char *arg, void *ctx)
{
    struct opts *o = ctx;
    if (code == OPT_RATE_PASSES)
        o->rate_passes = wl_opt_double("rate-passes", arg, 0, 1e6);
    else if (code == OPT_FILE) {
        if (*arg == '\0')
            wl_usage_error("invalid value '' for --file: empty path");
        o->file = arg;
    }
}

int main(int argc, char **argv)
{
    static const struct option extra[] = {
        {"rate-passes", required_argument, NULL, OPT_RATE_PASSES},
        {"file", required_argument, NULL, OPT_FILE},
        {NULL, 0, NULL, 0},
    };
    struct wl_common c = {.size_mib = 64};
    struct opts o = {.rate_passes = 0, .file = "/dev/shm/seqinc"};
    struct wl_json j = {0};
    unsigned char *mem;
    size_t bytes;
    uint64_t npages, i, passes = 0, start, deadline, now;
    int fd, locked;

    wl_parse_args(argc, argv, WL_OPT_SIZE_MIB | WL_OPT_DURATION | WL_OPT_PIDFILE | WL_OPT_OUT,
                  extra, handle, &o, usage, &c);
    bytes = wl_size_bytes(&c);
    npages = bytes / SEQ_PAGE;
    wl_install_stop_handlers();

    fd = open(o.file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        wl_die(1, "cannot open %s", o.file);
    if (ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)bytes) != 0)
        wl_die(1, "cannot size %s to %zu bytes", o.file, bytes);
    /* reserve the space now: a full tmpfs must be a clear error, not SIGBUS */
    errno = posix_fallocate(fd, 0, (off_t)bytes);
    if (errno != 0)
        wl_die(1, "cannot allocate %llu MiB in %s", (unsigned long long)c.size_mib, o.file);
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (mem == MAP_FAILED)
        wl_die(1, "cannot map %s", o.file);
    close(fd);
    locked = wl_try_lock(mem, bytes);
    for (i = 0; i < npages; i++)
        seq_page_init(mem + i * SEQ_PAGE, i, 0);

    wl_pidfile_write(c.pidfile);
    start = wl_now_ns();
    deadline = c.duration_s > 0 ? start + (uint64_t)(c.duration_s * 1e9) : UINT64_MAX;
    now = start;
    while (!wl_stop_requested && now < deadline) {
        for (i = 0; i < npages && !wl_stop_requested; i++)
            seq_page_increment(mem + i * SEQ_PAGE);
        if (i < npages)
            break; /* stopped mid-pass, between two pages */
        passes++;
        now = wl_now_ns();
        if (o.rate_passes > 0) {
            uint64_t next = start + (uint64_t)((double)passes * 1e9 / o.rate_passes);
            if (next > deadline)
                next = deadline;
            if (next > now)
                wl_sleep_until_ns(next);
            now = wl_now_ns();
        }
    }
    now = wl_now_ns();

    if (c.out) {
        wl_json_begin(&j, NULL, '{');
        wl_json_u64(&j, "passes", passes);
        wl_json_u64(&j, "pages", npages);
        wl_json_double(&j, "elapsed_s", (double)(now - start) / 1e9);
        wl_json_u64(&j, "size_mib", c.size_mib);
        wl_json_str(&j, "file", o.file);
        wl_json_double(&j, "rate_passes", o.rate_passes);
        wl_json_bool(&j, "mlocked", locked);
        wl_json_str(&j, "stopped_by", wl_stop_requested ? "signal" : "duration");
        wl_json_end(&j, '}');
        wl_json_write(&j, c.out);
    }
    wl_pidfile_remove(c.pidfile);
    return 0;
}
