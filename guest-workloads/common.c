#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

const char *wl_prog = "workload";
volatile sig_atomic_t wl_stop_requested;

/* ---- errors ------------------------------------------------------------ */

void wl_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", wl_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

void wl_die(int errno_too, const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    fprintf(stderr, "%s: ", wl_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (errno_too)
        fprintf(stderr, ": %s", strerror(e));
    fputc('\n', stderr);
    exit(1);
}

/* ---- argument validation ----------------------------------------------- */

int wl_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why)
{
    uint64_t v = 0;
    const char *p;

    if (s == NULL || *s == '\0') {
        *why = "empty value";
        return -1;
    }
    if (*s == '-') {
        *why = "must not be negative";
        return -1;
    }
    for (p = s; *p; p++) {
        unsigned d;
        if (*p < '0' || *p > '9') {
            *why = "not a decimal integer";
            return -1;
        }
        d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            *why = "too large";
            return -1;
        }
        v = v * 10 + d;
    }
    if (v < min) {
        *why = min == 1 ? "must be at least 1" : "too small";
        return -1;
    }
    if (v > max) {
        *why = "too large";
        return -1;
    }
    *out = v;
    return 0;
}

int wl_parse_double(const char *s, double min, double max, double *out, const char **why)
{
    const char *p;
    int digits = 0, dots = 0;
    double v;

    if (s == NULL || *s == '\0') {
        *why = "empty value";
        return -1;
    }
    if (*s == '-') {
        *why = "must not be negative";
        return -1;
    }
    for (p = s; *p; p++) {
        if (*p >= '0' && *p <= '9')
            digits++;
        else if (*p == '.' && dots == 0)
            dots++;
        else {
            *why = "not a number";
            return -1;
        }
    }
    if (digits == 0 || digits > 30) {
        *why = digits ? "too large" : "not a number";
        return -1;
    }
    v = strtod(s, NULL);
    if (!isfinite(v) || v > max) {
        *why = "too large";
        return -1;
    }
    if (v < min) {
        *why = "too small";
        return -1;
    }
    *out = v;
    return 0;
}

uint64_t wl_opt_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    uint64_t v;
    const char *why;
    if (wl_parse_u64(s, min, max, &v, &why) != 0)
        wl_usage_error("invalid value '%s' for --%s: %s (expected an integer in [%llu, %llu])", s,
                       opt, why, (unsigned long long)min, (unsigned long long)max);
    return v;
}

double wl_opt_double(const char *opt, const char *s, double min, double max)
{
    double v;
    const char *why;
    if (wl_parse_double(s, min, max, &v, &why) != 0)
        wl_usage_error("invalid value '%s' for --%s: %s (expected a number in [%g, %g])", s, opt,
                       why, min, max);
    return v;
}

/* ---- common options ---------------------------------------------------- */

static const struct option common_options[] = {
    {"size-mib", required_argument, NULL, WL_CODE_SIZE_MIB},
    {"duration", required_argument, NULL, WL_CODE_DURATION},
    {"seed", required_argument, NULL, WL_CODE_SEED},
    {"pidfile", required_argument, NULL, WL_CODE_PIDFILE},
    {"out", required_argument, NULL, WL_CODE_OUT},
};

static int common_enabled(unsigned which, int code)
{
    return which & (1u << (code - WL_CODE_SIZE_MIB));
}

void wl_parse_args(int argc, char **argv, unsigned which, const struct option *extra,
                   wl_opt_handler handler, void *ctx, const char *usage,
                   struct wl_common *common)
{
    struct option opts[64];
    size_t n = 0, i;
    int c;
    const char *slash = strrchr(argv[0], '/');

    wl_prog = slash ? slash + 1 : argv[0];
    for (i = 0; i < sizeof(common_options) / sizeof(common_options[0]); i++)
        if (common_enabled(which, common_options[i].val))
            opts[n++] = common_options[i];
    opts[n++] = (struct option){"help", no_argument, NULL, WL_CODE_HELP};
    for (i = 0; extra && extra[i].name; i++) {
        if (n >= sizeof(opts) / sizeof(opts[0]) - 1)
            wl_die(0, "internal error: too many options");
        opts[n++] = extra[i];
    }
    opts[n] = (struct option){NULL, 0, NULL, 0};

    opterr = 0; /* we print one clear line ourselves */
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case WL_CODE_SIZE_MIB:
            common->size_mib = wl_opt_u64("size-mib", optarg, 1, WL_MAX_SIZE_MIB);
            break;
        case WL_CODE_DURATION:
            common->duration_s = wl_opt_double("duration", optarg, 0, WL_MAX_DURATION_S);
            break;
        case WL_CODE_SEED:
            common->seed = wl_opt_u64("seed", optarg, 0, UINT64_MAX);
            common->seed_given = 1;
            break;
        case WL_CODE_PIDFILE:
            if (*optarg == '\0')
                wl_usage_error("invalid value '' for --pidfile: empty path");
            common->pidfile = optarg;
            break;
        case WL_CODE_OUT:
            if (*optarg == '\0')
                wl_usage_error("invalid value '' for --out: empty path");
            common->out = optarg;
            break;
        case WL_CODE_HELP:
            fputs(usage, stdout);
            exit(0);
        case ':':
            wl_usage_error("option '%s' requires a value (see --help)", argv[optind - 1]);
        case '?':
            wl_usage_error("unrecognized option '%s' (see --help)", argv[optind - 1]);
        default:
            if (c >= WL_OPT_FIRST_EXTRA && handler)
                handler(c, optarg, ctx);
            else
                wl_usage_error("bad command line (see --help)");
        }
    }
    if (optind < argc)
        wl_usage_error("unexpected argument '%s' (see --help)", argv[optind]);

    if ((which & WL_OPT_SEED) && !common->seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        common->seed = wl_mix64((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
                       (uint64_t)getpid();
        common->seed >>= 1; /* keep it < 2^63 so every JSON consumer reads it exactly as an int */
    }
}

void wl_note_seed(const struct wl_common *c)
{
    if (!c->seed_given)
        fprintf(stderr, "%s: seed=%llu (derived from the time)\n", wl_prog,
                (unsigned long long)c->seed);
}

size_t wl_size_bytes(const struct wl_common *c)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0) {
        uint64_t ram_mib = (uint64_t)pages * (uint64_t)psz / WL_MIB;
        if (c->size_mib > ram_mib)
            wl_usage_error("invalid value '%llu' for --size-mib: exceeds the machine's memory "
                           "(%llu MiB)",
                           (unsigned long long)c->size_mib, (unsigned long long)ram_mib);
    }
    return (size_t)(c->size_mib * WL_MIB);
}

/* ---- randomness -------------------------------------------------------- */

uint64_t wl_rng_below(struct wl_rng *r, uint64_t n)
{
    /* Rejection sampling: accept x below the largest multiple of n. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = wl_rng_next(r);
    while (x >= limit);
    return x % n;
}

void wl_shuffle(uint32_t *a, size_t n, struct wl_rng *r)
{
    size_t i;
    for (i = n; i > 1; i--) {
        size_t j = (size_t)wl_rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

void wl_permutation(uint32_t *a, size_t n, struct wl_rng *r)
{
    size_t i;
    for (i = 0; i < n; i++)
        a[i] = (uint32_t)i;
    wl_shuffle(a, n, r);
}

/* ---- time and signals -------------------------------------------------- */

uint64_t wl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void wl_sleep_until_ns(uint64_t t_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000ULL),
                          .tv_nsec = (long)(t_ns % 1000000000ULL)};
    while (!wl_stop_requested) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (rc != EINTR)
            break;
    }
}

static void on_stop_signal(int sig)
{
    (void)sig;
    wl_stop_requested = 1;
}

void wl_install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: sleeps are interrupted */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
}

void wl_block_usr1(void (*handler)(int), int stop_too, sigset_t *old)
{
    struct sigaction sa;
    sigset_t block;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    if (stop_too) {
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
    }
    sigprocmask(SIG_BLOCK, &block, old);
}

/* ---- memory ------------------------------------------------------------ */

void *wl_map_anon(size_t bytes, int populate)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
    if (p == MAP_FAILED)
        wl_die(1, "cannot map %zu MiB", bytes / (size_t)WL_MIB);
    return p;
}

int wl_try_lock(void *p, size_t bytes)
{
    return mlock(p, bytes) == 0;
}

/* ---- files ------------------------------------------------------------- */

int wl_write_file_atomic(const char *path, const void *buf, size_t len)
{
    char tmp[4096];
    const char *p = buf;
    int fd, e;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += w;
        len -= (size_t)w;
    }
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        fd = -1;
        goto fail;
    }
    return 0;
fail:
    e = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = e;
    return -1;
}

void wl_pidfile_write(const char *path)
{
    char buf[32];
    int n;
    if (!path)
        return;
    n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (wl_write_file_atomic(path, buf, (size_t)n) != 0)
        wl_die(1, "cannot write pid file %s", path);
}

void wl_pidfile_remove(const char *path)
{
    char buf[32] = {0};
    int fd;
    if (!path)
        return;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (read(fd, buf, sizeof(buf) - 1) > 0 && atol(buf) == (long)getpid())
        unlink(path);
    close(fd);
}

/* ---- JSON -------------------------------------------------------------- */

static void jb_reserve(struct wl_json *j, size_t more)
{
    if (j->len + more + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->len + more + 1)
            cap *= 2;
        j->buf = realloc(j->buf, cap);
        if (!j->buf)
            wl_die(1, "out of memory");
        j->cap = cap;
    }
}

WL_PRINTF(2, 3) static void jb_printf(struct wl_json *j, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    jb_reserve(j, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(j->buf + j->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    j->len += (size_t)n;
}

static void jb_string(struct wl_json *j, const char *s)
{
    jb_printf(j, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            jb_printf(j, "\\%c", ch);
        else if (ch < 0x20)
            jb_printf(j, "\\u%04x", ch);
        else
            jb_printf(j, "%c", ch);
    }
    jb_printf(j, "\"");
}

static void jb_key(struct wl_json *j, const char *key)
{
    if (j->need_comma)
        jb_printf(j, ", ");
    if (key) {
        jb_string(j, key);
        jb_printf(j, ": ");
    }
    j->need_comma = 1;
}

void wl_json_begin(struct wl_json *j, const char *key, char bracket)
{
    jb_key(j, key);
    jb_printf(j, "%c", bracket);
    j->need_comma = 0;
}

void wl_json_end(struct wl_json *j, char bracket)
{
    jb_printf(j, "%c", bracket);
    j->need_comma = 1;
}

void wl_json_u64(struct wl_json *j, const char *key, uint64_t v)
{
    jb_key(j, key);
    jb_printf(j, "%llu", (unsigned long long)v);
}

void wl_json_i64(struct wl_json *j, const char *key, int64_t v)
{
    jb_key(j, key);
    jb_printf(j, "%lld", (long long)v);
}

void wl_json_double(struct wl_json *j, const char *key, double v)
{
    jb_key(j, key);
    if (isfinite(v))
        jb_printf(j, "%.6f", v);
    else
        jb_printf(j, "null");
}

void wl_json_str(struct wl_json *j, const char *key, const char *s)
{
    jb_key(j, key);
    jb_string(j, s);
}

void wl_json_bool(struct wl_json *j, const char *key, int v)
{
    jb_key(j, key);
    jb_printf(j, v ? "true" : "false");
}

void wl_json_null(struct wl_json *j, const char *key)
{
    jb_key(j, key);
    jb_printf(j, "null");
}

void wl_json_free(struct wl_json *j)
{
    free(j->buf);
    j->buf = NULL;
    j->len = j->cap = 0;
    j->need_comma = 0;
}

void wl_json_write(struct wl_json *j, const char *path)
{
    jb_printf(j, "\n");
    if (wl_write_file_atomic(path, j->buf, j->len) != 0)
        wl_die(1, "cannot write %s", path);
    wl_json_free(j);
}
