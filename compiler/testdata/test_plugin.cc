// Pass plugins for compiler/pass_plugin_test.cc: one source, one behaviour per
// TEST_PLUGIN_<KIND> (compiler/BUILD.bazel builds each as libtest_plugin_<kind>.so).
// They use nothing of ppc's but its headers, so the test binary need not export symbols.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "compiler/pass_plugin.h"

namespace {

class Nop : public ppc::Pass {
 public:
  explicit Nop(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  absl::Status Run(ppc::ir::Module&) override { return absl::OkStatus(); }

 private:
  std::string name_;
};

[[maybe_unused]] ppc::PassInfo NopInfo(const std::string& name) {
  return {name, "does nothing (a test plugin's)", {}, [name](const ppc::PassOptions&)
                                                        -> absl::StatusOr<std::unique_ptr<ppc::Pass>> {
            return std::make_unique<Nop>(name);
          }};
}

}  // namespace

#if defined(TEST_PLUGIN_CRASHES_WHEN_LOADED)

// Dies in a static initializer, as a plugin with its own copy of ir/program.pb.cc does
// (protobuf aborts on the second registration of ir/program.proto).
namespace {
struct Crash {
  Crash() {
    std::fprintf(stderr, "test plugin: about to abort\n");
    std::abort();
  }
} crash;
}  // namespace
PPC_PASS_PLUGIN(registrar) { registrar->AddPass(NopInfo("test-never")); }

#elif defined(TEST_PLUGIN_CRASHES_IN_REGISTER)

PPC_PASS_PLUGIN(registrar) {
  registrar->AddPass(NopInfo("test-never"));
  volatile int* null = nullptr;
  *null = 1;  // SIGSEGV
}

#elif defined(TEST_PLUGIN_NOT_A_PLUGIN)

// A shared library, but not a plugin: no ABI symbols.
extern "C" int test_plugin_something(void) { return 1; }

#elif defined(TEST_PLUGIN_WRONG_ABI)

// Built "for ABI 7": the ABI symbols written by hand.
extern "C" int ppc_pass_plugin_abi_version(void) { return 7; }
extern "C" void ppc_pass_plugin_register(ppc::PassPluginRegistrar* registrar) {
  registrar->AddPass(NopInfo("test-wrong-abi"));
}

#else

PPC_PASS_PLUGIN(registrar) {
#if defined(TEST_PLUGIN_TWO_PASSES)
  registrar->AddPass(NopInfo("test-plugin-b"));
  registrar->AddPass(NopInfo("test-plugin-a"));
#elif defined(TEST_PLUGIN_NO_PASSES)
  (void)registrar;
#elif defined(TEST_PLUGIN_THROWS)
  registrar->AddPass(NopInfo("test-thrown-away"));
  throw std::runtime_error("the test plugin refuses to register");
#elif defined(TEST_PLUGIN_THROWS_INT)
  (void)registrar;
  throw 42;
#elif defined(TEST_PLUGIN_BAD_NAME)
  registrar->AddPass(NopInfo("Test_Bad_Name"));
#else
#error "define one TEST_PLUGIN_<KIND>"
#endif
}

#endif
