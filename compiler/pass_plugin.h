// Pass plugins: passes (usually schedules) from outside the tree, loaded into ppc at
// start-up with `ppc --pass-plugin=lib.so`. docs/writing-a-pass.md walks through one,
// examples/custom_schedule.
//
// The plugin ABI. A pass plugin is a shared library that exports two C symbols:
//
//   int ppc_pass_plugin_abi_version(void);
//       returns PPC_PASS_PLUGIN_ABI_VERSION as the plugin saw it when it was compiled;
//   void ppc_pass_plugin_register(ppc::PassPluginRegistrar* registrar);
//       adds the plugin's passes: registrar->AddPass(PassInfo{...}) once per pass.
//
// PPC_PASS_PLUGIN(registrar) { ... } defines both:
//
//   #include "compiler/pass_plugin.h"
//   PPC_PASS_PLUGIN(registrar) {
//     registrar->AddPass({"schedule-mine", "what it does", {"k"}, [](const ppc::PassOptions& o) { ... }});
//   }
//
// What crosses the boundary are C++ objects of ppc's (PassInfo, Pass, ir::Module, absl::Status,
// std::string, std::function), so a plugin must be compiled against this ppc's headers,
// with the same compiler, standard library and flags that change their layout
// (-std=c++17, _GLIBCXX_USE_CXX11_ABI). PPC_PASS_PLUGIN_ABI_VERSION changes whenever
// one of those types or this protocol changes; ppc refuses a plugin built for another.
//
// A plugin uses ppc's own code (passes::SchedulePass, ir::Grid, the order functions, the
// ir/program.proto messages) from the ppc executable: ppc is linked with -rdynamic, so
// those symbols resolve against ppc when the plugin is loaded (RTLD_NOW: an unresolved
// one is an error naming it, never a crash later). A plugin therefore links none of
// ppc's libraries, and above all not its own copy of ir/program.pb.cc: a second copy
// would register ir/program.proto twice in protobuf's descriptor pool. Protobuf and
// Abseil are shared libraries, loaded once. Build one with
//   Bazel:   cc_binary(linkshared = True, deps = ["//compiler:pass_plugin_api"])
//   by hand: g++ -std=c++17 -O2 -fPIC -shared -I<ppc source root> -I<dir of generated
//            ir/program.pb.h> plugin.cc -o libplugin.so
// (examples/custom_schedule/README.md has the exact commands).
//
// Loading (LoadPassPlugin, below) never crashes on a bad file: a missing file, a
// directory, anything that is not a shared library, missing symbols, another ABI, a
// pass name that is taken, a plugin that adds no pass and a registration that throws
// are errors naming the plugin. A library's own code runs when it is loaded (static
// initializers) and registers, so both are tried first in a forked child process: a
// plugin that crashes there (e.g. one with its own copy of ir/program.pb.cc, which
// protobuf aborts on) or hangs is an error too, not a crash of ppc. A plugin that loaded
// stays loaded (its passes' code lives in it) until the process exits; its static
// initializers have then run twice (child and ppc), so they should have no effects
// outside the process.
#ifndef PPC_COMPILER_PASS_PLUGIN_H_
#define PPC_COMPILER_PASS_PLUGIN_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "compiler/pass_registry.h"

// The ABI this ppc speaks. History: 1 = PassInfo {name, summary, options, create},
// Pass {name(), Run(ir::Plan&)}, plan format v4, PassPluginRegistrar::AddPass.
// 2 = Pass::Run(ir::Module&) (ir/module.h: the compiler's in-memory plan), plan format v5.
#define PPC_PASS_PLUGIN_ABI_VERSION 2

namespace ppc {

// What ppc_pass_plugin_register receives. AddPass only collects; ppc registers the
// passes after ppc_pass_plugin_register returns, and reports any that it refuses (a
// taken name, a name that is not kebab-case, no factory) naming the plugin and the pass.
class PassPluginRegistrar {
 public:
  virtual ~PassPluginRegistrar() = default;
  virtual void AddPass(PassInfo info) = 0;
};

// Loads the plugin at `path` (dlopen, RTLD_NOW | RTLD_LOCAL), checks its ABI version,
// runs its registration and hands each pass it added to `register_pass` (ppc:
// passes::RegisterPass), in the order added. Errors name `path`:
//   NotFound            no such file (or a path component that does not exist)
//   PermissionDenied    the file cannot be read
//   InvalidArgument     a directory or anything but a regular file; not a loadable shared
//                       library (dlerror's text: not ELF, wrong class, undefined symbols);
//                       crashes or exits while loading or registering (the probe's signal
//                       and last output lines); not a pass plugin (a symbol missing); no
//                       pass added; a pass that register_pass refuses as invalid
//   DeadlineExceeded    loading and registering took more than a minute (the probe)
//   FailedPrecondition  built for another PPC_PASS_PLUGIN_ABI_VERSION
//   AlreadyExists       a pass name that is already registered (register_pass's code)
//   Internal            the registration threw
// `registered`, when given, receives the names of the passes registered.
absl::Status LoadPassPlugin(const std::string& path, std::function<absl::Status(PassInfo)> register_pass,
                            std::vector<std::string>* registered = nullptr);

}  // namespace ppc

// The two symbols of the ABI, with C linkage.
#define PPC_PASS_PLUGIN_ABI_VERSION_SYMBOL "ppc_pass_plugin_abi_version"
#define PPC_PASS_PLUGIN_REGISTER_SYMBOL "ppc_pass_plugin_register"

extern "C" {
typedef int (*PpcPassPluginAbiVersionFn)(void);
typedef void (*PpcPassPluginRegisterFn)(ppc::PassPluginRegistrar* registrar);
}

// Defines a plugin's two exported symbols; the body that follows is the registration,
// with `registrar` (a ppc::PassPluginRegistrar*) in scope under the name given.
#define PPC_PASS_PLUGIN(registrar)                                                         \
  extern "C" __attribute__((visibility("default"))) int ppc_pass_plugin_abi_version(void) { \
    return PPC_PASS_PLUGIN_ABI_VERSION;                                                    \
  }                                                                                        \
  static void PpcPassPluginRegister(::ppc::PassPluginRegistrar* registrar);                \
  extern "C" __attribute__((visibility("default"))) void ppc_pass_plugin_register(         \
      ::ppc::PassPluginRegistrar* registrar) {                                             \
    PpcPassPluginRegister(registrar);                                                      \
  }                                                                                        \
  static void PpcPassPluginRegister(::ppc::PassPluginRegistrar* registrar)

#endif  // PPC_COMPILER_PASS_PLUGIN_H_
