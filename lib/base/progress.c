#include "base/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static sd_progress *active;

double sd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_time(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 359999) { snprintf(buf, n, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

void sd_progress_format(const sd_progress *p, double now, int width, char *buf, int bufsize)
{
    double el = now - p->t_start;
    double rate = el > 0 ? p->count / el : 0;
    char tel[32], teta[32], rs[48], tail[300];
    fmt_time(el, tel, sizeof tel);
    if (rate >= 1 || rate == 0) snprintf(rs, sizeof rs, "%.2fit/s", rate);
    else snprintf(rs, sizeof rs, "%.2fs/it", 1 / rate);
    const char *pf = p->postfix[0] ? ", " : "";
    if (p->total > 0) {
        double eta = rate > 0 ? (p->total - p->count) / rate : -1;
        fmt_time(eta, teta, sizeof teta);
        snprintf(tail, sizeof tail, "| %lld/%lld [%s<%s, %s%s%s]", (long long)p->count,
                 (long long)p->total, tel, teta, rs, pf, p->postfix);
        double frac = (double)p->count / p->total;
        if (frac > 1) frac = 1;
        char head[96];
        snprintf(head, sizeof head, "%s%s%3d%%|", p->desc, p->desc[0] ? ": " : "", (int)(frac * 100));
        int barw = width - (int)strlen(head) - (int)strlen(tail);
        if (barw < 1) barw = 10;
        if (barw > 60) barw = 60;
        int fill = (int)(frac * barw);
        int o = snprintf(buf, bufsize, "%s", head);
        for (int i = 0; i < barw && o < bufsize - 1; i++) buf[o++] = i < fill ? '#' : ' ';
        buf[o < bufsize ? o : bufsize - 1] = 0;
        if (o < bufsize) snprintf(buf + o, bufsize - o, "%s", tail);
    } else {
        snprintf(buf, bufsize, "%s%s%lld [%s, %s%s%s]", p->desc, p->desc[0] ? ": " : "",
                 (long long)p->count, tel, rs, pf, p->postfix);
    }
}

static int term_width(void)
{
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
    return 100;
}

static void draw(sd_progress *p, double now)
{
    char buf[512];
    int w = term_width();
    sd_progress_format(p, now, w - 1, buf, sizeof buf);
    if ((int)strlen(buf) > w - 1) buf[w - 1] = 0;
    fprintf(stderr, "\r%s\033[K", buf);
    fflush(stderr);
    p->t_last_draw = now;
}

void sd_progress_begin(sd_progress *p, const char *desc, int64_t total)
{
    memset(p, 0, sizeof *p);
    snprintf(p->desc, sizeof p->desc, "%s", desc ? desc : "");
    p->total = total;
    p->t_start = sd_now();
    const char *env = getenv("SD_PROGRESS");
    p->enabled = env ? atoi(env) != 0 : isatty(2);
    if (p->enabled) {
        active = p;
        draw(p, p->t_start);
    }
}

void sd_progress_update(sd_progress *p, int64_t n)
{
    p->count += n;
    if (!p->enabled) return;
    double now = sd_now();
    if (now - p->t_last_draw >= 0.1 || (p->total > 0 && p->count >= p->total)) draw(p, now);
}

void sd_progress_postfix(sd_progress *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->postfix, sizeof p->postfix, fmt, ap);
    va_end(ap);
}

void sd_progress_end(sd_progress *p)
{
    if (!p->enabled) return;
    draw(p, sd_now());
    fputc('\n', stderr);
    fflush(stderr);
    if (active == p) active = NULL;
    p->enabled = 0;
}

void sd_progress_clear_line(void)
{
    if (active && active->enabled) {
        fputs("\r\033[K", stderr);
        active->t_last_draw = 0;  /* redraw at the next update */
    }
}
