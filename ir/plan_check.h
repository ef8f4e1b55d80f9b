// The structural rules of a plan: one set, used by the compiler's verifier (before it
// judges the schedule) and by the runtime's load (before it allocates anything).
//
//  - topology, config and optimizer values in range (ir/limits.h; optimizer values as
//    torch.optim validates them), never defaulted;
//    config.schedule kebab-case (kSchedules or a plugin's);
//    config.micro_batches and micro_batch_size >= 1, and in a complete plan steps >= 1;
//  - the model: layer names non-empty and unique, every layer kind known, every
//    attribute key one its kind reads and every attribute in range, recorded shapes and
//    parameter counts equal to shape inference, tied weights of one shape, sizes within
//    the limits with every product overflow-checked;
//  - the placement: contiguous, non-empty virtual-stage ranges covering every layer, a
//    bijection between virtual stages and (stage, chunk) with config.virtual_stages
//    chunks per stage (ir/topology.h); adjacent virtual stages may share a stage (the
//    V placement's turn), their transfers then stay on the rank;
//  - the boundary table: one entry per boundary, equal to the output group of the
//    layer before it;
//  - the level: no programs at LEVEL_NONE, only compute ops below LOWERED, a complete
//    plan LOWERED;
//  - every instruction of every program (and eval program): micro-batch, slot, virtual
//    stage and boundary in range, compute ops and transfer ends on the stage that runs
//    their virtual stage, loads on the stages of the first and last virtual stages,
//    gradients only across boundaries with a FLOAT32 tensor, reductions over the stages
//    that hold the weight, a sharded step exactly when ZeRO-1 applies, eval programs
//    forward-only.
//
// It does not judge the schedule (order, liveness, matching, deadlock): that is the
// verifier's (passes/analysis/verifier.h). Errors are InvalidArgument and list every
// problem found (at most 25), each naming the field or the stage and instruction.
#ifndef PPC_IR_PLAN_CHECK_H_
#define PPC_IR_PLAN_CHECK_H_

#include <array>
#include <string>

#include "absl/status/status.h"
#include "ir/module.h"
#include "ir/program.pb.h"

namespace ppc::ir {

// The schedules built into the compiler (passes/registry.cc registers "schedule-<name>"
// for each). config.schedule names the schedule pass that wrote the programs: one of
// these or a pass plugin's, so a plan only requires a kebab-case name; the verifier
// proves the programs whoever wrote them.
inline constexpr std::array<const char*, 8> kSchedules = {"1f1b",      "data-parallel",    "dualpipev", "gpipe",
                                                           "inference", "interleaved-1f1b", "zb-h1",     "zb-v"};
// The schedules whose placement is the V (ir::Grid::Layout::kV, two chunks per stage).
bool IsVSchedule(const std::string& schedule);

// `complete`: what a runtime needs (inferred shapes, a partition and one program per
// stage) must be there. Without it, parts a compilation has not produced yet may be
// missing, but what is there must obey the rules.
// `check_programs` / `check_eval_programs` false: those programs' rules are taken as
// holding (they passed with this same header before; the pass pipeline knows).
absl::Status CheckPlanStructure(const Module& module, bool complete, bool check_programs = true,
                                bool check_eval_programs = true);
absl::Status CheckPlanStructure(const Plan& plan, bool complete);

// What one rank needs before it loads its stage: the rules of a complete plan for
// everything but the programs of other stages, which it neither checks nor runs (the
// launcher verifies the whole plan once; each rank then checks only its own programs).
absl::Status CheckStageStructure(const Plan& plan, int stage);

}  // namespace ppc::ir

#endif  // PPC_IR_PLAN_CHECK_H_
