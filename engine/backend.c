/* backend.c: choosing the backend of a run (see backend.h).
 *
 * "cuda" and "auto" look for the CUDA module: $SAELITE_CUDA_MODULE if set, else
 * saelite_cuda.so in the directory of the binary that holds this code (the
 * extension, or a test executable). The module links libcudart, cuBLAS and
 * cuSPARSE; where they or the driver are missing, "auto" quietly runs on the
 * CPU and "cuda" fails with the reason. "auto" first asks the driver
 * (libcuda.so.1) whether there is a device at all, so that a machine without a
 * GPU never loads the CUDA libraries. */
#include "backend.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Path of the CUDA module; -1 if it cannot be determined. */
static int cuda_module_path(char *buf, size_t size) {
    const char *env = getenv("SAELITE_CUDA_MODULE");
    if (env && *env) return snprintf(buf, size, "%s", env) < (int)size ? 0 : -1;
    Dl_info info;
    if (!dladdr((void *)cuda_module_path, &info) || !info.dli_fname) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    int dir_len = slash ? (int)(slash - info.dli_fname) + 1 : 0;
    int n = snprintf(buf, size, "%.*ssaelite_cuda.so", dir_len, info.dli_fname);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Opens the CUDA backend; *no_device = 1 when the module or a device is missing. */
static sl_backend *cuda_open(const sl_backend_setup *setup, int *no_device, sl_err *err) {
    *no_device = 1;
    char path[4200];
    if (cuda_module_path(path, sizeof path)) return sl_errf(err, "cannot locate saelite_cuda.so"), NULL;
    /* Never closed: the backend's ops live in it, and a second dlopen is a refcount. */
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return sl_errf(err, "cannot load the CUDA module %s: %s", path, why ? why : "?"), NULL;
    }
    sl_cuda_new_fn entry;
    *(void **)&entry = dlsym(h, SL_CUDA_ENTRY);
    if (!entry) return sl_errf(err, "%s: no entry point %s", path, SL_CUDA_ENTRY), NULL;

    sl_model_view view, *vp = NULL;
    sl_model_layer_view *layers = NULL;
    if (setup->model) {
        int n_layer = sl_model_config_of(setup->model)->n_layer;
        if (!(layers = malloc((size_t)n_layer * sizeof *layers))) return sl_errf(err, "out of memory"), NULL;
        if (sl_model_get_view(setup->model, &view, layers, err)) {
            free(layers);
            return NULL;
        }
        vp = &view;
    }
    sl_backend *b = entry(SL_CUDA_ABI_VERSION, setup, vp, no_device, err);
    free(layers); /* the weights were uploaded */
    return b;
}

/* Whether the CUDA driver sees a device, asked of libcuda.so.1 directly: cheap,
 * whereas loading the module maps cuBLAS and cuSPARSE (about 190 MB of RSS). */
static int driver_has_device(void) {
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (!h) return 0;
    int (*cu_init)(unsigned) = NULL, (*cu_count)(int *) = NULL;
    *(void **)&cu_init = dlsym(h, "cuInit");
    *(void **)&cu_count = dlsym(h, "cuDeviceGetCount");
    int n = 0;
    int ok = cu_init && cu_count && cu_init(0) == 0 && cu_count(&n) == 0 && n > 0;
    if (!ok) dlclose(h); /* kept open otherwise: the module is about to use it */
    return ok;
}

/* What the CUDA backend does not run yet: 0, or -1 with the reason. */
static int cuda_refuses(const sl_backend_setup *setup, sl_err *err) {
    if (!setup->model) return 0;
    const sl_model_config *c = sl_model_config_of(setup->model);
    if (c->family != SL_FAMILY_GPT2)
        return sl_errf(err, "the CUDA backend runs gpt2 models only; this is a %s model (device 'cpu' runs it)",
                       c->model_type);
    if (setup->hook.kind > SL_HOOK_RESID_POST)
        return sl_errf(err, "the CUDA backend runs hook_resid_pre, hook_attn_out, hook_mlp_out and hook_resid_post "
                            "only (device 'cpu' runs the others)");
    return 0;
}

sl_backend *sl_backend_open(const char *device, const sl_backend_setup *setup, sl_err *err) {
    if (device && strcmp(device, "cpu") == 0) return sl_backend_cpu_new(setup, err);
    int is_auto = !device || strcmp(device, "auto") == 0;
    if (!is_auto && strcmp(device, "cuda") != 0)
        return sl_errf(err, "unknown device '%s' (auto, cpu, cuda)", device), NULL;
    sl_err why = {{0}};
    if (cuda_refuses(setup, &why)) { /* auto: the CPU runs what the GPU backend does not */
        if (is_auto) return sl_backend_cpu_new(setup, err);
        return sl_errf(err, "device 'cuda': %s", why.msg), NULL;
    }
    if (is_auto && !getenv("SAELITE_CUDA_MODULE") && !driver_has_device()) return sl_backend_cpu_new(setup, err);
    sl_err cerr = {{0}};
    int no_device = 0;
    sl_backend *b = cuda_open(setup, &no_device, &cerr);
    if (b) return b;
    if (is_auto && no_device) return sl_backend_cpu_new(setup, err); /* describe() says "cpu" */
    return sl_errf(err, "device '%s': %s", is_auto ? "auto" : "cuda", cerr.msg), NULL;
}
