// Work over the stages of a plan, on the machine's cores: the compiler's passes, hashes,
// encoder and verifier treat each stage's program on its own, so a large plan (hundreds of
// stages, millions of instructions) compiles on every core. Results are deterministic:
// each index writes only what belongs to it, and callers merge per-index results in index
// order.
#ifndef PPC_IR_PARALLEL_H_
#define PPC_IR_PARALLEL_H_

#include <functional>

namespace ppc::ir {

// Runs fn(0), ..., fn(n - 1), on up to `max_threads` threads (0: one per core, as
// std::thread::hardware_concurrency() counts them; the caller's thread among them; at
// most 16) and returns when all have run. `min_per_thread`: the fewest indices worth a
// thread of their own (small loops stay on the calling thread). fn must not throw, and
// must be safe to run at once for different indices.
void ParallelFor(int n, const std::function<void(int)>& fn, int min_per_thread = 2, int max_threads = 0);

}  // namespace ppc::ir

#endif  // PPC_IR_PARALLEL_H_
