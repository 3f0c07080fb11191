/* backend.c: choosing the backend of a run (see backend.h). */
#include "backend.h"

#include <string.h>

sl_backend *sl_backend_open(const char *device, const sl_backend_setup *setup, sl_err *err) {
    if (!device || strcmp(device, "auto") == 0 || strcmp(device, "cpu") == 0) return sl_backend_cpu_new(setup, err);
    if (strcmp(device, "cuda") == 0)
        return sl_errf(err, "device 'cuda': this build of saelite has no CUDA backend"), NULL;
    return sl_errf(err, "unknown device '%s' (auto, cpu, cuda)", device), NULL;
}
