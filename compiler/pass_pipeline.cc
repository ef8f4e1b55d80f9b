#include "compiler/pass_pipeline.h"

#include <sys/stat.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "ir/plan_io.h"
#include "ir/status_macros.h"

namespace ppc {
namespace {

bool ValidName(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  return true;
}

}  // namespace

absl::StatusOr<std::vector<PipelineElement>> ParsePipeline(const std::string& text) {
  std::vector<PipelineElement> out;
  size_t i = 0;
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline '", text, "' at offset ", i, ": ", what));
  };
  while (i < text.size()) {
    size_t end = text.find_first_of(",{", i);
    if (end == std::string::npos) end = text.size();
    PipelineElement e;
    e.name = std::string(absl::StripAsciiWhitespace(text.substr(i, end - i)));
    if (!ValidName(e.name)) return error(absl::StrCat("bad pass name '", e.name, "'"));
    i = end;
    if (i < text.size() && text[i] == '{') {
      size_t close = text.find('}', i);
      if (close == std::string::npos) return error("missing '}'");
      std::string body = text.substr(i + 1, close - i - 1);
      for (absl::string_view kv : absl::StrSplit(body, ',', absl::SkipEmpty())) {
        std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
        if (p.first.empty() || kv.find('=') == absl::string_view::npos)
          return error(absl::StrCat("option '", kv, "' is not key=value"));
        if (!e.options.emplace(p.first, p.second).second) return error("duplicate option '" + p.first + "'");
      }
      i = close + 1;
    }
    out.push_back(std::move(e));
    if (i < text.size()) {
      if (text[i] != ',') return error("expected ','");
      ++i;
      if (i == text.size()) return error("trailing ','");
    }
  }
  return out;
}

std::string PrintPipeline(const std::vector<PipelineElement>& elements) {
  std::vector<std::string> parts;
  for (const PipelineElement& e : elements) {
    std::string s = e.name;
    if (!e.options.empty()) {
      std::vector<std::string> kvs;
      for (const auto& [k, v] : e.options) kvs.push_back(k + "=" + v);
      absl::StrAppend(&s, "{", absl::StrJoin(kvs, ","), "}");
    }
    parts.push_back(s);
  }
  return absl::StrJoin(parts, ",");
}

absl::StatusOr<PassPipeline> PassPipeline::Create(const std::string& text, const PassRegistry& registry,
                                                  Verifier verifier) {
  if (!verifier) return absl::InvalidArgumentError("a pass pipeline needs a verifier");
  PassPipeline pipeline;
  pipeline.verifier_ = std::move(verifier);
  ASSIGN_OR_RETURN(pipeline.elements_, ParsePipeline(text));
  for (const PipelineElement& e : pipeline.elements_) {
    ASSIGN_OR_RETURN(std::unique_ptr<Pass> pass, registry.Create(e.name, e.options));
    pipeline.passes_.push_back(std::move(pass));
  }
  return pipeline;
}

absl::StatusOr<bool> PassPipeline::Run(ir::Module& plan, const PipelineOptions& options, bool* verified) const {
  if (verified) *verified = false;
  // The input, for a reproducer (copied only when one may be written).
  const ir::Module input = options.dump_to.empty() ? ir::Module() : plan;
  auto print = [](const ir::Module& m) { return ir::PrintPlan(ir::ToPlan(m)); };
  std::ostream* out = options.out;
  if (!options.dump_to.empty()) mkdir(options.dump_to.c_str(), 0755);
  auto write_reproducer = [&](const std::string& failed_pass) {
    if (options.dump_to.empty()) return;
    std::string repro = absl::StrCat("# reproduce with: ppc opt --passes='", ToString(), "' ",
                                     options.dump_to, "/reproducer.txt OUT\n# failed in: ", failed_pass, "\n");
    ir::WriteFile(options.dump_to + "/reproducer.txt", print(input)).IgnoreError();
    ir::WriteFile(options.dump_to + "/reproducer.pipeline", repro).IgnoreError();
  };
  auto fail = [&](const absl::Status& status, const std::string& prefix, const std::string& pass) {
    if (options.print_ir_after_failure && out) *out << "// IR after failure of " << pass << "\n" << print(plan);
    write_reproducer(pass);
    return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
  };
  // The plan's part hashes now: one set per pass, the one after a pass being the one
  // before the next; and those of the plan the verifier last passed.
  ir::PartHashes current = ir::HashParts(plan);
  ir::PartHashes proven;
  bool any_proven = false;
  auto verify = [&]() {
    Unchanged unchanged;
    if (any_proven && current.header == proven.header) {
      unchanged.programs = current.programs == proven.programs;
      unchanged.eval_programs = current.eval_programs == proven.eval_programs;
    }
    absl::Status s = verifier_(plan, unchanged);
    if (s.ok()) {
      proven = current;
      any_proven = true;
    }
    return s;
  };
  if (options.verify_each) {
    absl::Status s = verify();
    if (!s.ok()) return fail(s, "input plan failed verification", "<input>");
  }
  bool any_changed = false;
  for (size_t i = 0; i < passes_.size(); ++i) {
    const std::string name = passes_[i]->name();
    if (options.disabled.count(name)) continue;
    auto start = std::chrono::steady_clock::now();
    absl::Status ran = passes_[i]->Run(plan);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!ran.ok()) return fail(ran, absl::StrCat("pass ", name, " failed"), name);
    if (options.time_passes && out) *out << absl::StrFormat("// %-28s %8.3f ms\n", name, ms);
    const ir::PartHashes after = ir::HashParts(plan);
    const bool changed = after != current;
    current = after;
    any_changed |= changed;
    if (changed && options.verify_each) {
      absl::Status s = verify();
      if (!s.ok()) return fail(s, absl::StrCat("failed after ", name), name);
    }
    if (out && (options.print_ir_after_all || (options.print_ir_after_change && changed))) {
      *out << "// IR after " << name << (changed ? "" : " (no change)") << "\n" << print(plan);
    }
    if (!options.dump_to.empty()) {
      RETURN_IF_ERROR(ir::WriteFile(absl::StrFormat("%s/%02d-%s.txt", options.dump_to, i, name), print(plan)));
    }
  }
  if (verified) *verified = options.verify_each;
  return any_changed;
}

}  // namespace ppc
