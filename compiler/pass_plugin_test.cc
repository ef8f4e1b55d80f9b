#include "compiler/pass_plugin.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>

#include "gtest/gtest.h"

namespace ppc {
namespace {

std::string Plugin(const std::string& kind) { return "compiler/testdata/libtest_plugin_" + kind + ".so"; }

class PassPluginTest : public ::testing::Test {
 protected:
  // A registry with one pass of its own, as ppc's has its built-in passes.
  PassRegistry registry{{{"test-builtin", "built in", {}, [](const PassOptions&)
                                                            -> absl::StatusOr<std::unique_ptr<Pass>> {
                           return absl::UnimplementedError("not used");
                         }}}};
  std::vector<std::string> names;

  absl::Status Load(const std::string& path) {
    return LoadPassPlugin(path, [this](PassInfo info) { return registry.Add(std::move(info)); }, &names);
  }
};

void ExpectError(const absl::Status& s, absl::StatusCode code, const std::string& path,
                 const std::string& fragment) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find("pass plugin '" + path + "'"), std::string::npos) << s;
  EXPECT_NE(s.message().find(fragment), std::string::npos) << s;
}

TEST_F(PassPluginTest, RegistersEveryPassItAdds) {
  ASSERT_TRUE(Load(Plugin("two_passes")).ok());
  EXPECT_EQ(names, (std::vector<std::string>{"test-plugin-b", "test-plugin-a"}));
  ASSERT_NE(registry.Find("test-plugin-a"), nullptr);
  ASSERT_NE(registry.Find("test-plugin-b"), nullptr);
  // Sorted into the registry, and its factories (the plugin's code) work.
  EXPECT_EQ(registry.passes()[0].name, "test-builtin");
  EXPECT_EQ(registry.passes()[1].name, "test-plugin-a");
  auto pass = registry.Create("test-plugin-a", {});
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ((*pass)->name(), "test-plugin-a");
  ir::Module module;
  EXPECT_TRUE((*pass)->Run(module).ok());
}

TEST_F(PassPluginTest, LoadingTheSamePluginTwiceNamesTheTakenPass) {
  ASSERT_TRUE(Load(Plugin("two_passes")).ok());
  absl::Status again = Load(Plugin("two_passes"));
  ExpectError(again, absl::StatusCode::kAlreadyExists, Plugin("two_passes"), "cannot register pass 'test-plugin-b'");
  EXPECT_NE(again.message().find("already registered"), std::string::npos) << again;
}

TEST_F(PassPluginTest, ANameTheRegistryHoldsIsAlreadyExists) {
  absl::Status s = LoadPassPlugin(Plugin("two_passes"), [](PassInfo info) -> absl::Status {
    if (info.name == "test-plugin-a") return absl::AlreadyExistsError("a pass named 'test-plugin-a' is taken");
    return absl::OkStatus();
  });
  ExpectError(s, absl::StatusCode::kAlreadyExists, Plugin("two_passes"), "cannot register pass 'test-plugin-a'");
}

TEST_F(PassPluginTest, WrongAbiVersion) {
  ExpectError(Load(Plugin("wrong_abi")), absl::StatusCode::kFailedPrecondition, Plugin("wrong_abi"),
              "was built for pass plugin ABI 7; this ppc has ABI " + std::to_string(PPC_PASS_PLUGIN_ABI_VERSION) +
                  ": rebuild it against this ppc's headers");
  EXPECT_EQ(registry.Find("test-wrong-abi"), nullptr);
}

TEST_F(PassPluginTest, ASharedLibraryThatIsNotAPlugin) {
  ExpectError(Load(Plugin("not_a_plugin")), absl::StatusCode::kInvalidArgument, Plugin("not_a_plugin"),
              "is not a ppc pass plugin: it does not export ppc_pass_plugin_abi_version()");
}

TEST_F(PassPluginTest, NoPasses) {
  ExpectError(Load(Plugin("no_passes")), absl::StatusCode::kInvalidArgument, Plugin("no_passes"),
              "registers no pass");
}

TEST_F(PassPluginTest, RegistrationThatThrows) {
  ExpectError(Load(Plugin("throws")), absl::StatusCode::kInternal, Plugin("throws"),
              "it threw an exception: the test plugin refuses to register");
  EXPECT_EQ(registry.Find("test-thrown-away"), nullptr) << "nothing of a failed registration is registered";
  ExpectError(Load(Plugin("throws_int")), absl::StatusCode::kInternal, Plugin("throws_int"),
              "an exception that is not a std::exception");
}

TEST_F(PassPluginTest, APluginThatCrashesIsAnErrorNotACrash) {
  absl::Status s = Load(Plugin("crashes_when_loaded"));
  ExpectError(s, absl::StatusCode::kInvalidArgument, Plugin("crashes_when_loaded"), "crashes when loaded (signal 6");
  EXPECT_NE(s.message().find("test plugin: about to abort"), std::string::npos) << s;
  EXPECT_NE(s.message().find("ir/program.pb.cc"), std::string::npos) << s;
  // A segfault: signal 11, or under AddressSanitizer (which catches it) an exit with its report.
  absl::Status segv = Load(Plugin("crashes_in_register"));
  EXPECT_EQ(segv.code(), absl::StatusCode::kInvalidArgument) << segv;
  EXPECT_TRUE(segv.message().find("crashes when loaded (signal 11") != std::string::npos ||
              segv.message().find("exits (status") != std::string::npos)
      << segv;
  EXPECT_EQ(registry.Find("test-never"), nullptr);
}

TEST_F(PassPluginTest, ANameThatIsNotKebabCase) {
  ExpectError(Load(Plugin("bad_name")), absl::StatusCode::kInvalidArgument, Plugin("bad_name"),
              "cannot register pass 'Test_Bad_Name': pass name 'Test_Bad_Name' is not kebab-case");
}

TEST_F(PassPluginTest, FilesThatAreNotPlugins) {
  const std::string dir = ::testing::TempDir();
  ExpectError(Load("/nonexistent/libx.so"), absl::StatusCode::kNotFound, "/nonexistent/libx.so", "does not exist");
  ExpectError(Load(dir), absl::StatusCode::kInvalidArgument, dir, "is a directory");
  const std::string text = dir + "/not_a_library.so";
  std::ofstream(text) << "this is text, not ELF\n";
  ExpectError(Load(text), absl::StatusCode::kInvalidArgument, text, "is not a loadable shared library");
  const std::string empty = dir + "/empty.so";
  std::ofstream(empty).flush();
  ExpectError(Load(empty), absl::StatusCode::kInvalidArgument, empty, "is not a loadable shared library");
  // A FIFO would block a reader: refused without opening it.
  const std::string fifo = dir + "/fifo.so";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ExpectError(Load(fifo), absl::StatusCode::kInvalidArgument, fifo, "is not a regular file");
  // An executable is not a shared library either.
  ExpectError(Load("/bin/sh"), absl::StatusCode::kInvalidArgument, "/bin/sh", "is not a loadable shared library");
  EXPECT_EQ(Load("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(names.empty());
}

TEST_F(PassPluginTest, ABareFileNameIsTheFileHereNotALibrarySearch) {
  char cwd[PATH_MAX];
  ASSERT_NE(getcwd(cwd, sizeof(cwd)), nullptr);
  const std::string plugin = std::string(cwd) + "/" + Plugin("two_passes");
  const std::string dir = ::testing::TempDir() + "/bare";
  mkdir(dir.c_str(), 0700);
  ASSERT_EQ(symlink(plugin.c_str(), (dir + "/libbare.so").c_str()), 0);
  ASSERT_EQ(chdir(dir.c_str()), 0);
  absl::Status s = Load("libbare.so");
  // A name the library search path would find is not looked up there.
  absl::Status libc = Load("libc.so.6");
  ASSERT_EQ(chdir(cwd), 0);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(libc.code(), absl::StatusCode::kNotFound) << libc;
}

}  // namespace
}  // namespace ppc
