// Golden plans. passes/testdata/<case>.txt holds "# pipeline: <passes>" on its first
// line and then an input plan (format v5: "ppc-plan v5 fingerprint=" and a header
// without placement, boundaries or programs). The test runs the pipeline (with the
// verifier, as `ppc opt` does) and compares the result's SUMMARY with
// <case>.expected.txt. The summary is what the passes decide, not the 100+-line header
// they carry through:
//
//   level <Plan.level>
//   placement chunks_per_stage=<V>
//     vs <v> layers [<begin>, <end>) stage <s> chunk <c>      (one line per virtual stage)
//   boundary <b> <tensor name>:<shape> ...                    (one line per boundary)
//   == stage <s> num_slots=<n>                                (the stage programs, as
//   <instructions, one per line>                               ir::PrintPlan prints them)
//   == eval stage <s> num_slots=<n>
//   ...
//
// or "error: <status>" when the pipeline fails (so expected errors are golden too).
//
// Regenerate every expected file (then review the diff by eye):
//   PPC_REGENERATE_GOLDEN=1 bazel run //passes:golden_test
// (`bazel run` runs the test binary in the workspace environment and sets
// BUILD_WORKSPACE_DIRECTORY, so the files are written in the source tree; the older
// `bazel run //passes:golden_test -- --update` does the same.) Asking for it anywhere
// else (e.g. `bazel test --test_env=PPC_REGENERATE_GOLDEN=1`) fails: a sandbox has no
// source tree to write to.
#include <dirent.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "ir/layer_shapes.h"
#include "ir/plan_io.h"
#include "passes/test_util.h"

namespace ppc::passes {
namespace {

bool update = false;

std::vector<std::string> Cases(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (absl::EndsWith(n, ".txt") && !absl::EndsWith(n, ".expected.txt")) out.push_back(n.substr(0, n.size() - 4));
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The part of a compiled plan the passes decide: level, placement, boundary table and
// the stage programs (training, then eval).
std::string Summary(const ir::Plan& plan) {
  std::string out = absl::StrCat("level ", ir::PlanLevel_Name(plan.level()), "\n");
  if (plan.placement().virtual_stages_size() > 0) {
    absl::StrAppend(&out, "placement chunks_per_stage=", plan.placement().chunks_per_stage(), "\n");
    for (int v = 0; v < plan.placement().virtual_stages_size(); ++v) {
      const ir::VirtualStage& vs = plan.placement().virtual_stages(v);
      absl::StrAppend(&out, "  vs ", v, " layers [", vs.begin(), ", ", vs.end(), ") stage ", vs.stage(), " chunk ",
                      vs.chunk(), "\n");
    }
  }
  for (int b = 0; b < plan.boundaries_size(); ++b) {
    std::vector<std::string> tensors;
    for (const ir::TensorSpec& t : plan.boundaries(b).tensors()) {
      tensors.push_back(absl::StrCat(t.name(), ":", ir::ShapeString(t)));
    }
    absl::StrAppend(&out, "boundary ", b, " ", absl::StrJoin(tensors, " "), "\n");
  }
  // The "== stage" / "== eval stage" sections exactly as the canonical text form has them.
  const std::string text = ir::PrintPlan(plan);
  const size_t programs = text.find("\n== ");
  if (programs != std::string::npos) absl::StrAppend(&out, text.substr(programs + 1));
  return out;
}

TEST(Golden, EveryCaseMatches) {
  const char* env = std::getenv("PPC_REGENERATE_GOLDEN");
  const bool regenerate = update || (env != nullptr && std::strcmp(env, "") != 0 && std::strcmp(env, "0") != 0);
  const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (regenerate && ws == nullptr) {
    FAIL() << "PPC_REGENERATE_GOLDEN needs `bazel run //passes:golden_test` (BUILD_WORKSPACE_DIRECTORY is not "
              "set, so there is no source tree to write to)";
  }
  const std::string dir = regenerate ? std::string(ws) + "/passes/testdata" : "passes/testdata";
  std::vector<std::string> cases = Cases(dir);
  ASSERT_GE(cases.size(), 16u) << "golden cases missing in " << dir;
  for (const std::string& name : cases) {
    SCOPED_TRACE(name);
    auto text = ir::ReadFile(dir + "/" + name + ".txt");
    ASSERT_TRUE(text.ok()) << text.status();
    ASSERT_TRUE(absl::StartsWith(*text, "# pipeline: ")) << "first line must be '# pipeline: ...'";
    size_t eol = text->find('\n');
    std::string pipeline = text->substr(12, eol - 12);
    auto input = ir::ParsePlan(text->substr(eol + 1));
    ASSERT_TRUE(input.ok()) << input.status();
    auto output = RunPipeline(*input, pipeline);
    std::string got = output.ok() ? Summary(*output) : absl::StrCat("error: ", output.status().ToString(), "\n");
    std::string path = dir + "/" + name + ".expected.txt";
    if (regenerate) {
      ASSERT_TRUE(ir::WriteFile(path, got).ok());
      continue;
    }
    auto want = ir::ReadFile(path);
    ASSERT_TRUE(want.ok()) << want.status() << " (regenerate: PPC_REGENERATE_GOLDEN=1 bazel run //passes:golden_test)";
    EXPECT_EQ(got, *want);
  }
}

}  // namespace
}  // namespace ppc::passes

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--update") == 0) ppc::passes::update = true;
  return RUN_ALL_TESTS();
}
