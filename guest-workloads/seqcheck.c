/*
 * seqcheck: verify the sequential-increment pattern written by seqinc.
 *
 * If --pidfile names a live seqinc, it is SIGSTOPped (and seqcheck waits until
 * it is really stopped) for the duration of the check and SIGCONTinued after.
 * Prints exactly one line:
 *   SEQCHECK PASS pages=N base=V step_at=K [torn_page=K]
 *   SEQCHECK FAIL <first problem> (+M more bad pages)
 * Exit status: 0 pass, 1 fail (including an unreadable file), 2 usage error.
 */
#define _GNU_SOURCE
#include "common.h"
#include "seqpage.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: seqcheck [--file F] [--pidfile P] [--out FILE]\n"
    "  --file F      pattern file (default /dev/shm/seqinc)\n"
    "  --pidfile P   seqinc's pid file: the writer is stopped during the check\n"
    "  --out FILE    JSON verdict with the (capped) list of bad pages\n";

enum { OPT_FILE = WL_OPT_FIRST_EXTRA, OPT_WRITER_PIDFILE };

struct opts {
    const char *file;
    const char *writer_pidfile;
};

static void handle(int code, const char *arg, void *ctx)
{
    struct opts *o = ctx;
    if (*arg == '\0')
        wl_usage_error("invalid value '' for --%s: empty path",
                       code == OPT_FILE ? "file" : "pidfile");
    if (code == OPT_FILE)
        o->file = arg;
    else
        o->writer_pidfile = arg;
}

/* State letter of /proc/PID/stat, or 0 when the process does not exist. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512], *p;
    FILE *f;
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    p = fgets(buf, sizeof(buf), f);
    fclose(f);
    if (!p || !(p = strrchr(buf, ')')) || p[1] != ' ')
        return 0;
    return p[2];
}

/* pid from the writer's pid file when it names a live seqinc, else 0. */
static pid_t live_writer(const char *pidfile)
{
    char path[64], comm[64] = {0};
    FILE *f = fopen(pidfile, "r");
    long pid = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 1)
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    if (!fgets(comm, sizeof(comm), f))
        comm[0] = 0;
    fclose(f);
    comm[strcspn(comm, "\n")] = 0;
    return strcmp(comm, "seqinc") == 0 ? (pid_t)pid : 0;
}

static void finish(const struct opts *o, const char *out, const char *line,
                   const struct seq_verdict *v, long writer, int stopped, double check_s)
{
    struct wl_json j = {0};
    char desc[512];
    size_t i;

    printf("%s\n", line);
    fflush(stdout);
    if (!out)
        return;
    wl_json_begin(&j, NULL, '{');
    wl_json_str(&j, "result", v && v->pass ? "PASS" : "FAIL");
    wl_json_str(&j, "message", line);
    wl_json_str(&j, "file", o->file);
    if (writer)
        wl_json_i64(&j, "writer_pid", writer);
    else
        wl_json_null(&j, "writer_pid");
    wl_json_bool(&j, "writer_stopped", stopped);
    wl_json_double(&j, "check_s", check_s);
    if (v) {
        wl_json_u64(&j, "pages", v->pages);
        wl_json_u64(&j, "base", v->base);
        wl_json_u64(&j, "step_at", v->step_at);
        if (v->torn_page >= 0)
            wl_json_i64(&j, "torn_page", v->torn_page);
        else
            wl_json_null(&j, "torn_page");
        wl_json_u64(&j, "bad_pages", v->nbad);
        wl_json_bool(&j, "bad_list_truncated", v->nbad > v->nlisted);
        wl_json_begin(&j, "bad", '[');
        for (i = 0; i < v->nlisted; i++) {
            const struct seq_bad_page *b = &v->bad[i];
            seq_describe(b, v->step_at, desc, sizeof(desc));
            wl_json_begin(&j, NULL, '{');
            wl_json_u64(&j, "page", b->page);
            wl_json_str(&j, "problem", seq_problem_name(b->problem));
            wl_json_u64(&j, "counter", b->counter);
            wl_json_u64(&j, "trailer", b->trailer);
            wl_json_u64(&j, "index", b->index);
            wl_json_u64(&j, "magic", b->magic);
            wl_json_u64(&j, "expected", b->expected);
            wl_json_str(&j, "description", desc);
            wl_json_end(&j, '}');
        }
        wl_json_end(&j, ']');
    }
    wl_json_end(&j, '}');
    wl_json_write(&j, out);
}

int main(int argc, char **argv)
{
    static const struct option extra[] = {
        {"file", required_argument, NULL, OPT_FILE},
        {"pidfile", required_argument, NULL, OPT_WRITER_PIDFILE},
        {NULL, 0, NULL, 0},
    };
    struct wl_common c = {0};
    struct opts o = {.file = "/dev/shm/seqinc", .writer_pidfile = NULL};
    struct seq_verdict *v;
    struct stat st;
    char line[768], desc[512];
    unsigned char *mem;
    pid_t writer = 0;
    int fd, stopped = 0, i;
    uint64_t t0;
    double check_s;

    wl_parse_args(argc, argv, WL_OPT_OUT, extra, handle, &o, usage, &c);
    /* Do not die between SIGSTOP and SIGCONT of the writer. */
    wl_install_stop_handlers();

    fd = open(o.file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(line, sizeof(line), "SEQCHECK FAIL cannot open %s: %s", o.file, strerror(errno));
        finish(&o, c.out, line, NULL, 0, 0, 0);
        return 1;
    }
    if (st.st_size <= 0 || st.st_size % SEQ_PAGE != 0) {
        snprintf(line, sizeof(line),
                 "SEQCHECK FAIL %s has size %lld, not a positive multiple of %u bytes", o.file,
                 (long long)st.st_size, SEQ_PAGE);
        finish(&o, c.out, line, NULL, 0, 0, 0);
        return 1;
    }

    if (o.writer_pidfile && (writer = live_writer(o.writer_pidfile)) != 0) {
        if (kill(writer, SIGSTOP) == 0) {
            stopped = 1;
            /* SIGSTOP is asynchronous: wait until the writer is really stopped. */
            for (i = 0; i < 2000 && proc_state(writer) != 'T' && proc_state(writer) != 't'; i++)
                usleep(1000);
        }
    }

    t0 = wl_now_ns();
    mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        if (stopped)
            kill(writer, SIGCONT);
        snprintf(line, sizeof(line), "SEQCHECK FAIL cannot map %s: %s", o.file, strerror(errno));
        finish(&o, c.out, line, NULL, writer, stopped, 0);
        return 1;
    }
    close(fd);
    v = malloc(sizeof(*v));
    if (!v || seq_check(mem, (uint64_t)st.st_size / SEQ_PAGE, v) < 0) {
        if (stopped)
            kill(writer, SIGCONT);
        wl_die(0, "out of memory");
    }
    check_s = (double)(wl_now_ns() - t0) / 1e9;
    munmap(mem, (size_t)st.st_size);
    if (stopped)
        kill(writer, SIGCONT);

    if (v->pass) {
        int n = snprintf(line, sizeof(line), "SEQCHECK PASS pages=%" PRIu64 " base=%" PRIu64
                         " step_at=%" PRIu64, v->pages, v->base, v->step_at);
        if (v->torn_page >= 0)
            snprintf(line + n, sizeof(line) - (size_t)n, " torn_page=%" PRId64, v->torn_page);
    } else {
        seq_describe(&v->bad[0], v->step_at, desc, sizeof(desc));
        snprintf(line, sizeof(line), "SEQCHECK FAIL %s (+%" PRIu64 " more bad pages)", desc,
                 v->nbad - 1);
    }
    finish(&o, c.out, line, v, writer, stopped, check_s);
    return v->pass ? 0 : 1;
}
