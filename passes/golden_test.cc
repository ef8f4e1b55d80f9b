// Golden plans: passes/testdata/<case>.txt holds "# pipeline: <passes>" and an input
// plan; <case>.expected.txt the plan after the pipeline. Text in, text out.
// Regenerate (then review the diff):
//   bazel run //passes:golden_test -- --update
#include <dirent.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
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

TEST(Golden, EveryCaseMatches) {
  const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  std::string dir = (update && ws) ? std::string(ws) + "/passes/testdata" : "passes/testdata";
  std::vector<std::string> cases = Cases(dir);
  ASSERT_GE(cases.size(), 6u) << "golden cases missing in " << dir;
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
    std::string got = output.ok() ? ir::PrintPlan(*output) : absl::StrCat("error: ", output.status().ToString(), "\n");
    std::string path = dir + "/" + name + ".expected.txt";
    if (update) {
      ASSERT_TRUE(ir::WriteFile(path, got).ok());
      continue;
    }
    auto want = ir::ReadFile(path);
    ASSERT_TRUE(want.ok()) << want.status() << " (regenerate: bazel run //passes:golden_test -- --update)";
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
