#include "tests/pprun_util.h"

#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "ir/plan_io.h"
#include "passes/test_util.h"

namespace ppc::e2e {

std::string Tmp(const std::string& name) { return ::testing::TempDir() + "/" + name; }

RunResult Exec(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  std::string log = Tmp("run.log");
  // One BLAS thread per rank in every run, so the reference and the pipeline use the
  // same kernels and differ only by the order of gradient sums.
  std::string cmd = "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ";
  for (const auto& [k, v] : env) absl::StrAppend(&cmd, k, "=", v, " ");
  for (const auto& a : args) absl::StrAppend(&cmd, "'", a, "' ");
  absl::StrAppend(&cmd, "> ", log, " 2>&1");
  RunResult r;
  int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = ir::ReadFile(log).value_or("");
  return r;
}

std::string CompileTo(ir::Plan plan, const std::string& name) {
  auto compiled = passes::Compile(std::move(plan));  // CompilePlan: verified and stamped
  EXPECT_TRUE(compiled.ok()) << compiled.status();
  if (!compiled.ok()) return Tmp(name + ".missing.pb");
  std::string path = Tmp(name + ".pb");
  EXPECT_TRUE(ir::SavePlan(*compiled, path).ok());
  return path;
}

RunResult Pprun(const std::string& plan_path, int nproc, const std::string& name, const std::vector<std::string>& extra,
                const std::map<std::string, std::string>& env) {
  std::string metrics = Tmp(name + ".metrics"), weights = Tmp(name + ".weights");
  std::error_code ec;
  std::filesystem::remove_all(weights, ec);
  std::filesystem::remove(metrics, ec);
  std::vector<std::string> args{kPprun,          plan_path,  "--nproc", std::to_string(nproc), "--quiet",
                                "--timeout-s",   "60",       "--metrics-out", metrics, "--dump-weights",
                                weights};
  args.insert(args.end(), extra.begin(), extra.end());
  RunResult r = Exec(args, env);
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() == 3) r.losses.push_back(std::stod(parts[1]));
    if (parts.size() == 5 && parts[0] == "eval") {
      r.evals.push_back({std::stod(parts[1]), std::stod(parts[2]), std::stod(parts[3]), std::stod(parts[4])});
    }
  }
  if (std::filesystem::is_directory(weights, ec)) {
    for (const auto& e : std::filesystem::directory_iterator(weights, ec)) {
      auto bytes = ir::ReadFile(e.path().string());
      std::vector<float> v(bytes->size() / sizeof(float));
      std::memcpy(v.data(), bytes->data(), v.size() * sizeof(float));
      r.weights[e.path().filename().string()] = v;
    }
  }
  return r;
}

}  // namespace ppc::e2e
