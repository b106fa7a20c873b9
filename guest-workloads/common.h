/*
 * Shared helpers for the guest workloads: argument parsing and validation,
 * seeded PRNG, monotonic timing, signal-driven stop, memory mapping, pid
 * files and a tiny JSON writer with atomic file output.
 *
 * One piece of code per idea: the programs (dirty, seqinc, seqcheck, probe)
 * only contain what is specific to them.
 */
#ifndef WL_COMMON_H
#define WL_COMMON_H

#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define WL_MIB (1024ULL * 1024ULL)
#define WL_MAX_SIZE_MIB (1024ULL * 1024ULL)     /* 1 TiB: anything above is absurd */
#define WL_MAX_DURATION_S (10.0 * 24 * 3600)    /* 10 days */

#define WL_NORETURN __attribute__((noreturn))
#define WL_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Program name used as the prefix of every message. */
extern const char *wl_prog;

/* ---- errors ------------------------------------------------------------ */

/* Usage error: one line on stderr, exit code 2. */
WL_NORETURN WL_PRINTF(1, 2) void wl_usage_error(const char *fmt, ...);
/* Runtime error: one line on stderr (with strerror(errno) when errno_too), exit 1. */
WL_NORETURN WL_PRINTF(2, 3) void wl_die(int errno_too, const char *fmt, ...);

/* ---- argument validation (pure functions) ------------------------------ */

/*
 * Parse a non-negative decimal integer in [min, max].  Returns 0 on success;
 * on failure returns -1 and sets *why to a static explanation.  Rejects
 * empty strings, signs, spaces, hex, trailing garbage and overflow.
 */
int wl_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why);
/* Same for a plain decimal number with an optional fraction ("2", "0.5"). */
int wl_parse_double(const char *s, double min, double max, double *out, const char **why);

/* Wrappers used during option parsing: exit 2 naming the option on error. */
uint64_t wl_opt_u64(const char *opt, const char *s, uint64_t min, uint64_t max);
double wl_opt_double(const char *opt, const char *s, double min, double max);

/* ---- common options ---------------------------------------------------- */

enum {
    WL_OPT_SIZE_MIB = 1 << 0,
    WL_OPT_DURATION = 1 << 1,
    WL_OPT_SEED = 1 << 2,
    WL_OPT_PIDFILE = 1 << 3,
    WL_OPT_OUT = 1 << 4,
};

/* getopt_long codes of the common options; programs use codes >= WL_OPT_FIRST_EXTRA. */
enum {
    WL_CODE_SIZE_MIB = 1000,
    WL_CODE_DURATION,
    WL_CODE_SEED,
    WL_CODE_PIDFILE,
    WL_CODE_OUT,
    WL_CODE_HELP,
    WL_OPT_FIRST_EXTRA = 1100,
};

struct wl_common {
    uint64_t size_mib;   /* --size-mib N */
    double duration_s;   /* --duration SEC, 0 = until SIGTERM/SIGINT */
    uint64_t seed;       /* --seed S, or derived from the time */
    int seed_given;
    const char *pidfile; /* --pidfile FILE */
    const char *out;     /* --out FILE (JSON result) */
};

/* Handler for the program's own options (codes >= WL_OPT_FIRST_EXTRA). */
typedef void (*wl_opt_handler)(int code, const char *arg, void *ctx);

/*
 * Parse argv: the common options selected by `which` plus `extra` (a
 * {0}-terminated struct option array whose codes are >= WL_OPT_FIRST_EXTRA,
 * handled by `handler`).  --help prints `usage` and exits 0; unknown options,
 * missing values and positional arguments exit 2.  Fills in a default seed
 * derived from the time when --seed was not given (and WL_OPT_SEED is used);
 * call wl_note_seed() once the command line is fully validated.
 */
void wl_parse_args(int argc, char **argv, unsigned which, const struct option *extra,
                   wl_opt_handler handler, void *ctx, const char *usage,
                   struct wl_common *common);

/* Print "PROG: seed=N (derived from the time)" on stderr when no --seed was given. */
void wl_note_seed(const struct wl_common *c);

/* Bytes for --size-mib; exits 2 when the size exceeds the machine's RAM. */
size_t wl_size_bytes(const struct wl_common *c);

/* ---- randomness -------------------------------------------------------- */

/* splitmix64 finaliser: a good 64-bit mixing function. */
static inline uint64_t wl_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

struct wl_rng {
    uint64_t s;
};

static inline void wl_rng_seed(struct wl_rng *r, uint64_t seed) { r->s = seed; }
static inline uint64_t wl_rng_next(struct wl_rng *r)
{
    r->s += 0x9e3779b97f4a7c15ULL;
    return wl_mix64(r->s);
}
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t wl_rng_below(struct wl_rng *r, uint64_t n);
/* Fill a[0..n) with 0..n-1 and shuffle it (Fisher-Yates). */
void wl_permutation(uint32_t *a, size_t n, struct wl_rng *r);
/* Shuffle a[0..n) in place (Fisher-Yates). */
void wl_shuffle(uint32_t *a, size_t n, struct wl_rng *r);

/* ---- time and signals -------------------------------------------------- */

uint64_t wl_now_ns(void); /* CLOCK_MONOTONIC */
/* Sleep until CLOCK_MONOTONIC reaches t_ns or a stop is requested. */
void wl_sleep_until_ns(uint64_t t_ns);

/* Set by SIGTERM/SIGINT once wl_install_stop_handlers() was called. */
extern volatile sig_atomic_t wl_stop_requested;
void wl_install_stop_handlers(void);
/*
 * Install `handler` for SIGUSR1 and block SIGUSR1 (and SIGTERM/SIGINT when
 * stop_too) until the program waits with sigsuspend(): a signal sent early is
 * not lost.  *old receives the mask before.
 */
void wl_block_usr1(void (*handler)(int), int stop_too, sigset_t *old);

/* ---- memory ------------------------------------------------------------ */

/* Anonymous private mapping, optionally pre-faulted for writing. Exits 1 on failure. */
void *wl_map_anon(size_t bytes, int populate);
/* mlock() best effort; returns 1 when locked. */
int wl_try_lock(void *p, size_t bytes);

/* ---- files ------------------------------------------------------------- */

/* Write buf to path atomically (tmp file + rename). Returns 0 or -1 (errno set). */
int wl_write_file_atomic(const char *path, const void *buf, size_t len);
/* Write our pid to path (atomically); exits 1 on failure.  NULL = no-op. */
void wl_pidfile_write(const char *path);
/* Remove the pid file if it still holds our pid.  NULL = no-op. */
void wl_pidfile_remove(const char *path);

/* ---- JSON -------------------------------------------------------------- */

struct wl_json {
    char *buf;
    size_t len, cap;
    int need_comma;
};

/* key == NULL inside arrays. */
void wl_json_begin(struct wl_json *j, const char *key, char bracket); /* '{' or '[' */
void wl_json_end(struct wl_json *j, char bracket);                    /* '}' or ']' */
void wl_json_u64(struct wl_json *j, const char *key, uint64_t v);
void wl_json_i64(struct wl_json *j, const char *key, int64_t v);
void wl_json_double(struct wl_json *j, const char *key, double v);
void wl_json_str(struct wl_json *j, const char *key, const char *s);
void wl_json_bool(struct wl_json *j, const char *key, int v);
void wl_json_null(struct wl_json *j, const char *key);
/* Write the document atomically (with a trailing newline) and free it. Exits 1 on error. */
void wl_json_write(struct wl_json *j, const char *path);
void wl_json_free(struct wl_json *j);

#endif
