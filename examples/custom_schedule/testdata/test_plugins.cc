// Small pass plugins for custom_schedule_test.sh, one per TEST_PLUGIN_<KIND>:
//   WRONG_ABI  claims pass plugin ABI 7 (ppc refuses it: rebuild against its headers);
//   DUPLICATE  registers schedule-1f1b, a name ppc already has (AlreadyExists);
//   GPIPE      registers schedule-plugin-gpipe, ppc's own GPipe order under a new name,
//              so that `ppc compile --schedule plugin-gpipe` runs the default pipeline
//              with a plugin's schedule (no options).
// Like the example, they call ppc's code (SchedulePass, the order functions) from the
// ppc executable.
#include <memory>

#include "compiler/pass_plugin.h"
#include "passes/schedule/schedule.h"

namespace {

ppc::PassInfo ScheduleInfo(const char* name, ppc::passes::StageOrder order) {
  return {name, "a test plugin's schedule", {}, [name, order](const ppc::PassOptions&)
                                                  -> absl::StatusOr<std::unique_ptr<ppc::Pass>> {
            return std::make_unique<ppc::passes::SchedulePass>(name, order, ppc::passes::AnyShape);
          }};
}

}  // namespace

#if defined(TEST_PLUGIN_WRONG_ABI)

extern "C" int ppc_pass_plugin_abi_version(void) { return 7; }
extern "C" void ppc_pass_plugin_register(ppc::PassPluginRegistrar* registrar) {
  registrar->AddPass(ScheduleInfo("schedule-from-abi-7", ppc::passes::GPipeOrder));
}

#else

PPC_PASS_PLUGIN(registrar) {
#if defined(TEST_PLUGIN_DUPLICATE)
  registrar->AddPass(ScheduleInfo("schedule-1f1b", ppc::passes::OneFOneBOrder));
#elif defined(TEST_PLUGIN_GPIPE)
  registrar->AddPass(ScheduleInfo("schedule-plugin-gpipe", ppc::passes::GPipeOrder));
#else
#error "define one TEST_PLUGIN_<KIND>"
#endif
}

#endif
