// A deterministic mutation fuzzer for the targets in targets.h, for machines without
// libFuzzer (tools/fuzz.sh uses libFuzzer when clang has it). Every input runs in a
// forked child with a time limit, so a crash or a hang is counted, not fatal:
//
//   fuzz_driver --target plan|spec|ds_config --corpus DIR [--inputs N] [--seed S]
//               [--timeout-ms T] [--artifacts DIR]
//
// prints "target T: inputs N, clean errors N, crashes N, hangs N" and exits 1 if any
// input crashed or hung (each is saved under --artifacts to reproduce), if a seed named
// repro_* was accepted (it is an input that once crashed or ran wrongly), or if any other
// seed was refused (a stale corpus, e.g. plans of an older format, fuzzes nothing but
// the first error).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/fuzz/targets.h"

namespace {

namespace fs = std::filesystem;

// Tokens that have broken parsers before: numbers at and past every limit, special
// floats, structure characters, and the fields that size things.
const std::vector<std::string> kDictionary = {
    "-1", "0", "1", "2", "-2147483648", "2147483647", "4294967304", "1000000000", "9223372036854775807",
    "18446744073709551615", "1e309", "-1e309", "nan", "inf", "-inf", "1e-320", "0.5", "1.5", "[", "]", "{", "}",
    "\"", ":", ",", "\n", " ", "true", "false", "null", "stride", "kernel_size", "padding", "dilation",
    "out_features", "in_features", "num_slots=", "micro_batches: ", "micro_batch_size: ", "mb=", "slot=", "vs=",
    "boundary=", "direction=ACTIVATION", "direction=GRADIENT", "kind=FORWARD", "kind=BACKWARD",
    "kind=BACKWARD_INPUT", "kind=BACKWARD_WEIGHT", "== stage ", "== eval stage ", "compute kind=FORWARD vs=",
    "compute kind=BACKWARD vs=", "send direction=ACTIVATION boundary=", "recv direction=GRADIENT boundary=",
    "optimizer_step sharded=true", "gather_params", "reduce_grads", "wait ops=[", "recv/activation/0/0",
    "send/gradient/0/0", "placement { chunks_per_stage: ", "virtual_stages { begin: ", "end: ", "stage: ",
    "chunk: ", "boundaries { tensors { shape: ", "outputs { shape: ", "level: ", "LOWERED", "BUFFERED",
    "COMPUTE_ONLY", "virtual_stages: ", "\"interleaved-1f1b\"", "num_stages: ", "data_parallel: ", "lr: ", "betas",
    "eps", "zero_stage: ", "\"stage\": ", "train_batch_size", "gradient_accumulation_steps", "tie_key: \"t\"",
    "kind: \"Conv2d\"", "kind: \"MaxPool2d\"", "kind: \"Fork\"", "kind: \"Add\"", "ceil_mode"};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class Mutator {
 public:
  Mutator(uint64_t seed, const std::vector<std::string>& corpus) : rng_(seed), corpus_(corpus) {}

  std::string Next() {
    std::string s = corpus_[Pick(corpus_.size())];
    const int n = 1 + static_cast<int>(Pick(4));
    for (int k = 0; k < n; ++k) Mutate(s);
    if (s.size() > (1 << 20)) s.resize(1 << 20);
    return s;
  }

 private:
  size_t Pick(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

  void Mutate(std::string& s) {
    const size_t at = Pick(s.size() + 1);
    switch (Pick(8)) {
      case 0:  // flip a bit
        if (!s.empty()) s[Pick(s.size())] ^= static_cast<char>(1 << Pick(8));
        break;
      case 1:  // an interesting byte
        if (!s.empty()) s[Pick(s.size())] = "\0\xff-9 {\"\n"[Pick(8)];
        break;
      case 2:  // insert a token
        s.insert(at, kDictionary[Pick(kDictionary.size())]);
        break;
      case 3:  // replace a number with a token
      {
        size_t b = s.find_first_of("0123456789", at);
        if (b == std::string::npos) break;
        size_t e = s.find_first_not_of("0123456789.", b);
        s.replace(b, (e == std::string::npos ? s.size() : e) - b, kDictionary[Pick(20)]);
        break;
      }
      case 4:  // delete a range
        if (!s.empty()) s.erase(at == s.size() ? at - 1 : at, 1 + Pick(16));
        break;
      case 5:  // duplicate a range
        if (!s.empty()) {
          const size_t b = Pick(s.size());
          s.insert(at, s.substr(b, 1 + Pick(64)));
        }
        break;
      case 6:  // splice another input's tail
      {
        const std::string& other = corpus_[Pick(corpus_.size())];
        s = s.substr(0, at) + other.substr(Pick(other.size() + 1));
        break;
      }
      default:  // swap two lines
      {
        std::vector<std::string> lines;
        size_t p = 0;
        while (p <= s.size()) {
          size_t q = s.find('\n', p);
          lines.push_back(s.substr(p, (q == std::string::npos ? s.size() : q) - p));
          if (q == std::string::npos) break;
          p = q + 1;
        }
        if (lines.size() > 1) std::swap(lines[Pick(lines.size())], lines[Pick(lines.size())]);
        s.clear();
        for (size_t i = 0; i < lines.size(); ++i) s += lines[i] + (i + 1 < lines.size() ? "\n" : "");
      }
    }
  }

  std::mt19937_64 rng_;
  const std::vector<std::string>& corpus_;
};

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags{{"--inputs", "1000"}, {"--seed", "1"}, {"--timeout-ms", "5000"}};
  for (int i = 1; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  const std::map<std::string, std::function<int(const uint8_t*, size_t)>> targets = {
      {"plan", ppc::fuzz::PlanTarget}, {"spec", ppc::fuzz::SpecTarget}, {"ds_config", ppc::fuzz::DsConfigTarget}};
  auto target = targets.find(flags["--target"]);
  if (target == targets.end() || flags["--corpus"].empty()) {
    std::fprintf(stderr, "usage: fuzz_driver --target plan|spec|ds_config --corpus DIR [--inputs N] [--seed S]\n");
    return 2;
  }
  std::vector<std::string> corpus;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(flags["--corpus"])) files.push_back(e.path());
  std::sort(files.begin(), files.end());  // deterministic
  for (const auto& f : files) corpus.push_back(ReadAll(f));
  if (corpus.empty()) corpus.push_back("");
  const long inputs = std::stol(flags["--inputs"]);
  const long timeout_ms = std::stol(flags["--timeout-ms"]);
  Mutator mutator(std::stoull(flags["--seed"]), corpus);
  long clean = 0, crashes = 0, hangs = 0, accepted_reproducers = 0, refused_seeds = 0;
  for (long n = 0; n < inputs; ++n) {
    // The seeds themselves first, then mutations of them.
    const std::string input = n < static_cast<long>(corpus.size()) ? corpus[n] : mutator.Next();
    std::fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      const int code = target->second(reinterpret_cast<const uint8_t*>(input.data()), input.size());
      _exit(code);
    }
    int status = 0;
    const auto start = std::chrono::steady_clock::now();
    bool hung = false;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() - start > std::chrono::milliseconds(timeout_ms)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        hung = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    const bool crashed = !hung && !(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1));
    if (hung || crashed) {
      (hung ? hangs : crashes) += 1;
      if (!flags["--artifacts"].empty()) {
        fs::create_directories(flags["--artifacts"]);
        const std::string path = flags["--artifacts"] + "/" + (hung ? "hang-" : "crash-") + flags["--target"] + "-" +
                                 std::to_string(n);
        std::ofstream(path, std::ios::binary) << input;
        std::fprintf(stderr, "%s on input %ld (saved as %s)\n", hung ? "hang" : "crash", n, path.c_str());
      }
    } else if (WEXITSTATUS(status) == 1) {
      ++clean;
    } else if (n < static_cast<long>(files.size()) && files[n].filename().string().rfind("repro_", 0) == 0) {
      // A seed named repro_* is an input that once crashed or ran wrongly: it must be refused.
      ++accepted_reproducers;
      std::fprintf(stderr, "reproducer %s was accepted; it must be refused with an error\n", files[n].c_str());
    }
    if (!hung && !crashed && WEXITSTATUS(status) == 1 && n < static_cast<long>(files.size()) &&
        files[n].filename().string().rfind("repro_", 0) != 0) {
      // Any other seed is a valid input: refusing it means the corpus no longer exercises
      // what lies past the first check (e.g. a plan of an older format version).
      ++refused_seeds;
      std::fprintf(stderr, "seed %s was refused; every seed not named repro_* must be accepted\n", files[n].c_str());
    }
  }
  std::printf("target %s: inputs %ld, clean errors %ld, crashes %ld, hangs %ld\n", flags["--target"].c_str(), inputs,
              clean, crashes, hangs);
  return crashes + hangs + accepted_reproducers + refused_seeds > 0 ? 1 : 0;
}
