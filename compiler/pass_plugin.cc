#include "compiler/pass_plugin.h"

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "ir/status_macros.h"

namespace ppc {
namespace {

// Collects what a plugin adds; ppc registers it once the plugin's registration returned.
class Collector : public PassPluginRegistrar {
 public:
  void AddPass(PassInfo info) override { passes.push_back(std::move(info)); }
  std::vector<PassInfo> passes;
};

std::string DlError() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown dlopen error";
}

// What an exception that left the plugin says.
std::string Describe(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return absl::StrCat("an exception: ", x.what());
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

// How long a plugin may take to load and register in the probe.
constexpr int kProbeSeconds = 60;

// The last lines a probe printed, for an error message.
std::string Tail(const std::string& output) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipWhitespace())) {
    lines.emplace_back(absl::StripAsciiWhitespace(line));
  }
  if (lines.size() > 4) lines.erase(lines.begin(), lines.end() - 4);
  std::string tail = absl::StrJoin(lines, " | ");
  if (tail.size() > 800) tail = "..." + tail.substr(tail.size() - 800);
  return tail.empty() ? "" : absl::StrCat("; it printed: ", tail);
}

// A shared library runs code of its own when it is loaded (static initializers) and when
// it registers; code that crashes there would take ppc with it. So the plugin is loaded
// and registered first in a child process (a fork of this one, so with the same symbols
// and registry), and only if the child finishes does this process load it. OK when the
// probe cannot run (no fork): the real load then goes ahead unprobed.
absl::Status Probe(const std::string& load_path, const std::string& named) {
  int fds[2];
  if (pipe(fds) != 0) return absl::OkStatus();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::OkStatus();
  }
  if (pid == 0) {
    // The child: its output goes to the parent, which shows it only if the child dies.
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    if (void* handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      auto* version_fn = reinterpret_cast<PpcPassPluginAbiVersionFn>(dlsym(handle, PPC_PASS_PLUGIN_ABI_VERSION_SYMBOL));
      auto* register_fn = reinterpret_cast<PpcPassPluginRegisterFn>(dlsym(handle, PPC_PASS_PLUGIN_REGISTER_SYMBOL));
      try {
        if (version_fn != nullptr && register_fn != nullptr && version_fn() == PPC_PASS_PLUGIN_ABI_VERSION) {
          Collector collector;
          register_fn(&collector);
        }
      } catch (...) {
        // The real load reports it.
      }
    }
    std::fflush(nullptr);
    _exit(0);
  }
  close(fds[1]);
  std::string output;
  bool timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kProbeSeconds);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timed_out = ready == 0;
      break;
    }
    char buffer[4096];
    const ssize_t n = read(fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the child is done (or closed its output)
    if (output.size() < (1 << 20)) output.append(buffer, n);
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(named, " did not finish loading and registering its passes in ",
                                                    kProbeSeconds, " s", Tail(output)));
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::InvalidArgumentError(absl::StrCat(
        named, " crashes when loaded (signal ", sig, ", ", strsignal(sig), ")", Tail(output),
        ". A plugin that links its own copy of ppc's code (e.g. ir/program.pb.cc, which registers "
        "ir/program.proto a second time) aborts so: compile it against ppc's headers only and link none of "
        "ppc's libraries (compiler/pass_plugin.h)"));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(named, " exits (status ", WEXITSTATUS(status),
                                                   ") when loaded", Tail(output)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadPassPlugin(const std::string& path, std::function<absl::Status(PassInfo)> register_pass,
                            std::vector<std::string>* registered) {
  const std::string named = absl::StrCat("pass plugin '", path, "'");
  auto error = [&](absl::StatusCode code, const std::string& what) {
    return absl::Status(code, absl::StrCat(named, " ", what));
  };
  if (path.empty()) return absl::InvalidArgumentError("a pass plugin path is empty");
  if (!register_pass) return absl::InvalidArgumentError(absl::StrCat(named, ": no registration function given"));

  // A file ppc may open: dlopen on a FIFO or a device could block or read forever.
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) return error(absl::StatusCode::kNotFound, "does not exist (no such file)");
    if (e == EACCES) return error(absl::StatusCode::kPermissionDenied, absl::StrCat("cannot be read: ", std::strerror(e)));
    return error(absl::StatusCode::kInvalidArgument, absl::StrCat("cannot be read: ", std::strerror(e)));
  }
  if (S_ISDIR(st.st_mode)) {
    return error(absl::StatusCode::kInvalidArgument, "is a directory, not a shared library");
  }
  if (!S_ISREG(st.st_mode)) {
    return error(absl::StatusCode::kInvalidArgument, "is not a regular file; a pass plugin is a shared library (.so)");
  }
  if (access(path.c_str(), R_OK) != 0) {
    const int e = errno;
    return error(absl::StatusCode::kPermissionDenied, absl::StrCat("cannot be read: ", std::strerror(e)));
  }

  // A name without '/' would be looked up in the library search path, not here.
  const std::string load_path = path.find('/') == std::string::npos ? "./" + path : path;
  RETURN_IF_ERROR(Probe(load_path, named));
  dlerror();
  void* handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return error(absl::StatusCode::kInvalidArgument,
                 absl::StrCat("is not a loadable shared library: ", DlError(),
                              " (a pass plugin is a shared library built against this ppc's headers and linked "
                              "without ppc's own code; compiler/pass_plugin.h)"));
  }

  // Until the plugin's registration runs, nothing of it is kept: unload it on failure.
  auto refuse = [&](absl::StatusCode code, const std::string& what) {
    dlclose(handle);
    return error(code, what);
  };
  auto symbol = [&](const char* name) {
    dlerror();
    return dlsym(handle, name);
  };
  auto* version_fn = reinterpret_cast<PpcPassPluginAbiVersionFn>(symbol(PPC_PASS_PLUGIN_ABI_VERSION_SYMBOL));
  auto* register_fn = reinterpret_cast<PpcPassPluginRegisterFn>(symbol(PPC_PASS_PLUGIN_REGISTER_SYMBOL));
  if (version_fn == nullptr || register_fn == nullptr) {
    return refuse(absl::StatusCode::kInvalidArgument,
                  absl::StrCat("is not a ppc pass plugin: it does not export ",
                               version_fn == nullptr ? PPC_PASS_PLUGIN_ABI_VERSION_SYMBOL
                                                     : PPC_PASS_PLUGIN_REGISTER_SYMBOL,
                               "() (define the plugin with PPC_PASS_PLUGIN, compiler/pass_plugin.h)"));
  }
  int version = 0;
  try {
    version = version_fn();
  } catch (...) {
    return refuse(absl::StatusCode::kInternal,
                  absl::StrCat("threw from " PPC_PASS_PLUGIN_ABI_VERSION_SYMBOL "(): ",
                               Describe(std::current_exception())));
  }
  if (version != PPC_PASS_PLUGIN_ABI_VERSION) {
    return refuse(absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("was built for pass plugin ABI ", version, "; this ppc has ABI ",
                               PPC_PASS_PLUGIN_ABI_VERSION, ": rebuild it against this ppc's headers"));
  }

  // From here on the plugin stays loaded: what it added (its factories) is its code, and
  // so are the passes ppc registers.
  Collector collector;
  try {
    register_fn(&collector);
  } catch (...) {
    const std::string what = Describe(std::current_exception());
    collector.passes.clear();
    return error(absl::StatusCode::kInternal, absl::StrCat("failed to register its passes: it threw ", what));
  }
  if (collector.passes.empty()) {
    return error(absl::StatusCode::kInvalidArgument,
                 "registers no pass (its " PPC_PASS_PLUGIN_REGISTER_SYMBOL "() never called registrar->AddPass)");
  }
  for (PassInfo& info : collector.passes) {
    const std::string name = info.name;
    absl::Status added = register_pass(std::move(info));
    if (!added.ok()) {
      return absl::Status(added.code(),
                          absl::StrCat(named, " cannot register pass '", name, "': ", added.message()));
    }
    if (registered != nullptr) registered->push_back(name);
  }
  return absl::OkStatus();
}

}  // namespace ppc
