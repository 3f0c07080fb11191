/* emulate.h: a small CPU launch emulator for the kernels of kernels.cuh.
 *
 * Host C++ only (compiled with -DSL_CUDA_EMULATE, never by nvcc). A launch runs
 * the grid's blocks one after another; the threads of a block are cooperative
 * fibers (ucontext) on the calling thread, each with its own stack. A barrier
 * (SL_SYNC) switches to the next fiber; once every thread of the block has
 * reached it, all resume. A block whose threads do not all reach the same number
 * of barriers (undefined on a GPU) aborts with a message. Shared memory is one
 * zeroed buffer per block; atomics need nothing (one OS thread). */
#ifndef SAELITE_CUDA_EMULATE_H
#define SAELITE_CUDA_EMULATE_H

#ifndef SL_CUDA_EMULATE
#error "emulate.h is for the host build of the kernels (-DSL_CUDA_EMULATE)"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct sl_emu_state {
    dim3 tid, bid, bdim, gdim;          /* of the running fiber */
    unsigned char *smem = nullptr;      /* the block's shared memory */
    std::vector<ucontext_t> fibers;     /* [threads per block] */
    std::vector<char> stacks;           /* [threads per block * STACK] */
    std::vector<int> done;              /* [threads per block] 1 once returned */
    std::vector<dim3> tids;
    ucontext_t main_ctx;
    int cur = 0;
    const std::function<void()> *body = nullptr;
    unsigned long long launches = 0, barriers = 0;
};

inline sl_emu_state &sl_emu() {
    static sl_emu_state s;
    return s;
}

enum { SL_EMU_STACK = 128 * 1024 };

inline void sl_emu_sync() {
    sl_emu_state &s = sl_emu();
    s.barriers++;
    swapcontext(&s.fibers[(size_t)s.cur], &s.main_ctx);
}

inline void sl_emu_fiber_entry() {
    sl_emu_state &s = sl_emu();
    (*s.body)();
    s.done[(size_t)s.cur] = 1; /* returning resumes main_ctx (uc_link) */
}

/* Makes *f a fresh fiber on stack that runs sl_emu_fiber_entry, then resumes *link.
 * To the compiler getcontext returns twice, as setjmp does: in a function of its own
 * (which GCC never inlines) it leaves sl_emu_launch's loop free of -Wclobbered's
 * doubt about its locals. It does return once only here: makecontext replaces the
 * saved state's entry point before the fiber first runs. */
inline void sl_emu_fiber_init(ucontext_t *f, char *stack, ucontext_t *link) {
    getcontext(f);
    f->uc_stack.ss_sp = stack;
    f->uc_stack.ss_size = SL_EMU_STACK;
    f->uc_link = link;
    makecontext(f, sl_emu_fiber_entry, 0);
}

/* Runs body as kernel<<<grid, block, smem_bytes>>> would. */
inline void sl_emu_launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()> &body) {
    sl_emu_state &s = sl_emu();
    const size_t nt = (size_t)block.x * block.y * block.z;
    if (nt == 0 || nt > 1024) {
        fprintf(stderr, "emulator: invalid block of %zu threads\n", nt);
        abort();
    }
    s.launches++;
    s.fibers.resize(nt);
    s.done.resize(nt);
    s.tids.resize(nt);
    if (s.stacks.size() < nt * SL_EMU_STACK) s.stacks.resize(nt * SL_EMU_STACK);
    std::vector<unsigned char> smem(smem_bytes ? smem_bytes : 1);
    s.body = &body;
    s.bdim = block;
    s.gdim = grid;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                s.bid = dim3(bx, by, bz);
                memset(smem.data(), 0, smem.size());
                s.smem = smem.data();
                for (size_t t = 0; t < nt; t++) {
                    sl_emu_fiber_init(&s.fibers[t], s.stacks.data() + t * SL_EMU_STACK, &s.main_ctx);
                    s.done[t] = 0;
                    s.tids[t] = dim3((unsigned)(t % block.x), (unsigned)(t / block.x % block.y),
                                     (unsigned)(t / ((size_t)block.x * block.y)));
                }
                /* Rounds: every live fiber runs to its next barrier or to its end. */
                for (;;) {
                    size_t finished = 0, waiting = 0;
                    for (size_t t = 0; t < nt; t++) {
                        if (s.done[t]) continue;
                        s.cur = (int)t;
                        s.tid = s.tids[t];
                        swapcontext(&s.main_ctx, &s.fibers[t]);
                        if (s.done[t])
                            finished++;
                        else
                            waiting++;
                    }
                    if (waiting == 0) break;
                    if (finished) {
                        fprintf(stderr, "emulator: block (%u,%u,%u): %zu threads returned while %zu wait at a barrier\n",
                                bx, by, bz, finished, waiting);
                        abort();
                    }
                }
            }
    s.smem = nullptr;
}

typedef int sl_stream; /* no streams: launches run to completion */

#define SL_KERNEL static void
#define SL_DEV static inline
#define SL_TX (sl_emu().tid.x)
#define SL_BX (sl_emu().bid.x)
#define SL_NTX (sl_emu().bdim.x)
#define SL_NBX (sl_emu().gdim.x)
#define SL_SYNC() sl_emu_sync()
#define SL_SHARED(T, name) T *name = (T *)sl_emu().smem
#define SL_ATOMIC_ADD(p, v) (*(p) += (v))
#define SL_RUN_KERNEL(kernel, grid, block, smem, stream, ...)                                                \
    sl_emu_launch((grid), (block), (smem), [=]() { kernel(__VA_ARGS__); })

#endif
