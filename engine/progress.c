#include "progress.h"

static void human(double v, char *buf, size_t size) {
    if (v >= 1e9) snprintf(buf, size, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, size, "%.2fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, size, "%.1fk", v / 1e3);
    else snprintf(buf, size, "%.0f", v);
}

static void clock_str(double s, char *buf, size_t size) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, size, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%02ld:%02ld", t / 60, t % 60);
}

void sl_progress_draw(FILE *out, const char *label, const char *device, const sl_extract_progress *p) {
    enum { WIDTH = 24 };
    double frac = p->tokens_total ? (double)p->tokens_done / (double)p->tokens_total : 1.0;
    int fill = (int)(frac * WIDTH + 0.5);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = 0;
    double rate = p->seconds > 0 ? (double)p->tokens_done / p->seconds : 0;
    char done[32], total[32], speed[32], eta[32], elapsed[32];
    human((double)p->tokens_done, done, sizeof done);
    human((double)p->tokens_total, total, sizeof total);
    human(rate, speed, sizeof speed);
    clock_str(rate > 0 ? (double)(p->tokens_total - p->tokens_done) / rate : -1, eta, sizeof eta);
    clock_str(p->seconds, elapsed, sizeof elapsed);
    fprintf(out, "\r\033[K%s [%s] %5.1f%% %s/%s tok  %llu/%llu seq  %s tok/s  %s%s%s%s  %s %s", label, bar,
            100 * frac, done, total, (unsigned long long)p->sequences_done, (unsigned long long)p->sequences_total,
            speed, device, p->device_status[0] ? " [" : "", p->device_status, p->device_status[0] ? "]" : "",
            p->finalizing ? "finalizing" : (p->tokens_done == p->tokens_total ? "elapsed" : "ETA"),
            p->finalizing || p->tokens_done == p->tokens_total ? elapsed : eta);
    fflush(out);
}

void sl_progress_end(FILE *out) {
    fputc('\n', out);
    fflush(out);
}
