/*
 * heartbeat: one byte on a virtio-serial port every --period-us (default 1 ms), for the host to timestamp.
 *
 * The host reads the port's chardev and stamps each byte with its own clock (harness/vm/heartbeat.py): the
 * longest silence around a migration's switchover is the blackout the guest lived through, measured outside
 * QEMU's own accounting.  The guest's clock is of no use for that (a stopped VM's clock stops too), so this
 * program only keeps time well enough to tick: a tick it could not send on time is sent at once, never
 * made up for later (no bursts after a pause).
 *
 * The port is --port DEV, or the virtio-serial port whose name is --name (default "heartbeat", looked up in
 * /sys/class/virtio-ports: the guest has no udev to make /dev/virtio-ports/NAME).
 */
#define _GNU_SOURCE
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: heartbeat [--port DEV | --name NAME] [--period-us US] [--duration SEC]\n"
    "                 [--pidfile FILE] [--out FILE]\n"
    "  --port DEV        character device to write to\n"
    "  --name NAME       virtio-serial port name to look up instead (default heartbeat)\n"
    "  --period-us US    one byte every US microseconds (default 1000)\n"
    "  --duration SEC    stop after SEC seconds (default 0 = until SIGTERM/SIGINT)\n"
    "  --pidfile FILE    written once the port is open\n"
    "  --out FILE        JSON {ticks, write_errors, elapsed_s, ...} written on exit\n";

enum { OPT_PORT = WL_OPT_FIRST_EXTRA, OPT_NAME, OPT_PERIOD_US };

struct opts {
    const char *port;
    const char *name;
    uint64_t period_us;
};

static void handle(int code, const char *arg, void *ctx)
{
    struct opts *o = ctx;
    if (code == OPT_PORT || code == OPT_NAME) {
        if (*arg == '\0')
            wl_usage_error("invalid value '' for --%s: empty", code == OPT_PORT ? "port" : "name");
        if (code == OPT_PORT)
            o->port = arg;
        else
            o->name = arg;
    } else if (code == OPT_PERIOD_US)
        o->period_us = wl_opt_u64("period-us", arg, 100, 1000000);
}

/* /dev/vportNpM of the virtio-serial port named `name`, or NULL. */
static const char *find_port(const char *name, char *path, size_t size)
{
    DIR *dir = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    const char *found = NULL;

    if (!dir)
        return NULL;
    while (!found && (e = readdir(dir)) != NULL) {
        char file[512], text[128];
        ssize_t n;
        int fd;

        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof(file), "/sys/class/virtio-ports/%s/name", e->d_name);
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n <= 0)
            continue;
        text[n] = '\0';
        text[strcspn(text, "\n")] = '\0';
        if (strcmp(text, name) == 0) {
            snprintf(path, size, "/dev/%s", e->d_name);
            found = path;
        }
    }
    closedir(dir);
    return found;
}

int main(int argc, char **argv)
{
    static const struct option extra[] = {
        {"port", required_argument, NULL, OPT_PORT},
        {"name", required_argument, NULL, OPT_NAME},
        {"period-us", required_argument, NULL, OPT_PERIOD_US},
        {NULL, 0, NULL, 0},
    };
    struct wl_common c = {0};
    struct opts o = {.port = NULL, .name = "heartbeat", .period_us = 1000};
    struct wl_json j = {0};
    char found[300];
    uint64_t ticks = 0, errors = 0, late = 0, start, next, now, deadline, period_ns;
    int fd;

    wl_parse_args(argc, argv, WL_OPT_DURATION | WL_OPT_PIDFILE | WL_OPT_OUT, extra, handle, &o, usage, &c);
    if (!o.port && !(o.port = find_port(o.name, found, sizeof(found))))
        wl_die(0, "no virtio-serial port named '%s' (is the virtio_console module loaded and the port "
                  "configured?)", o.name);
    fd = open(o.port, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        wl_die(1, "cannot open %s", o.port);
    wl_install_stop_handlers();
    wl_pidfile_write(c.pidfile);

    period_ns = o.period_us * 1000ULL;
    start = now = wl_now_ns();
    deadline = c.duration_s > 0 ? start + (uint64_t)(c.duration_s * 1e9) : UINT64_MAX;
    next = start;
    while (!wl_stop_requested && now < deadline) {
        unsigned char byte = (unsigned char)ticks;

        if (write(fd, &byte, 1) == 1)
            ticks++;
        else if (errno != EINTR)
            errors++;
        next += period_ns;
        now = wl_now_ns();
        if (now > next + period_ns) { /* behind (a pause, a slow write): tick now, never in a burst */
            late++;
            next = now;
        }
        wl_sleep_until_ns(next);
        now = wl_now_ns();
    }

    if (c.out) {
        wl_json_begin(&j, NULL, '{');
        wl_json_u64(&j, "ticks", ticks);
        wl_json_u64(&j, "write_errors", errors);
        wl_json_u64(&j, "late", late);
        wl_json_u64(&j, "period_us", o.period_us);
        wl_json_double(&j, "elapsed_s", (double)(now - start) / 1e9);
        wl_json_str(&j, "port", o.port);
        wl_json_end(&j, '}');
        wl_json_write(&j, c.out);
    }
    close(fd);
    wl_pidfile_remove(c.pidfile);
    return 0;
}
