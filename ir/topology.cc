#include "ir/topology.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "ir/limits.h"

namespace ppc::ir {

Grid::Grid(int stages, int replicas, int chunks, Layout layout)
    : stages_(std::max(1, stages)), replicas_(std::max(1, replicas)), chunks_(std::max(1, chunks)) {
  if (layout == Layout::kV) chunks_ = 2;
  const int v = stages_ * chunks_;
  stage_of_.resize(v);
  chunk_of_.resize(v);
  virtual_of_.resize(v);
  for (int i = 0; i < v; ++i) {
    if (layout == Layout::kV) {
      std::tie(stage_of_[i], chunk_of_[i]) = VPlace(i, stages_);
    } else {
      stage_of_[i] = i % stages_;
      chunk_of_[i] = i / stages_;
    }
    virtual_of_[stage_of_[i] * chunks_ + chunk_of_[i]] = i;
  }
}

void Grid::VShape(int stages, Placement* placement) {
  placement->set_chunks_per_stage(2);
  for (int v = 0; v < placement->virtual_stages_size(); ++v) {
    const auto [stage, chunk] = VPlace(v, stages);
    placement->mutable_virtual_stages(v)->set_stage(stage);
    placement->mutable_virtual_stages(v)->set_chunk(chunk);
  }
}

bool Grid::IsV() const {
  if (chunks_ != 2) return false;
  for (int v = 0; v < virtual_stages(); ++v)
    if (std::pair<int, int>{stage_of_[v], chunk_of_[v]} != VPlace(v, stages_)) return false;
  return true;
}

void Grid::RoundRobin(int stages, int chunks, Placement* placement) {
  placement->set_chunks_per_stage(chunks);
  for (int v = 0; v < placement->virtual_stages_size(); ++v) {
    placement->mutable_virtual_stages(v)->set_stage(v % stages);
    placement->mutable_virtual_stages(v)->set_chunk(v / stages);
  }
}

absl::StatusOr<Grid> Grid::Of(const Plan& plan) {
  const int p = plan.topology().num_stages(), d = plan.topology().data_parallel();
  if (p < 1 || p > kMaxStages || d < 1 || d > kMaxDataParallel) {
    return absl::InvalidArgumentError(absl::StrCat("topology ", p, " stages x ", d, " replicas is out of range"));
  }
  const Placement& pl = plan.placement();
  const int chunks = pl.virtual_stages_size() == 0 ? std::max(1, pl.chunks_per_stage()) : pl.chunks_per_stage();
  if (chunks < 1 || chunks > kMaxChunks) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement.chunks_per_stage is ", chunks, "; it must be in [1, ", kMaxChunks, "]"));
  }
  Grid grid(p, d, chunks);
  if (pl.virtual_stages_size() == 0) return grid;  // not placed yet: round-robin
  if (pl.virtual_stages_size() != p * chunks) {
    return absl::InvalidArgumentError(absl::StrCat("placement has ", pl.virtual_stages_size(),
                                                   " virtual stages; ", p, " stages x ", chunks, " chunks need ",
                                                   p * chunks));
  }
  std::vector<int> seen(p * chunks, -1);
  for (int v = 0; v < pl.virtual_stages_size(); ++v) {
    const ir::VirtualStage& vs = pl.virtual_stages(v);
    if (vs.stage() < 0 || vs.stage() >= p || vs.chunk() < 0 || vs.chunk() >= chunks) {
      return absl::InvalidArgumentError(absl::StrCat("placement virtual stage ", v, " is on stage ", vs.stage(),
                                                     " chunk ", vs.chunk(), "; there are ", p, " stages x ", chunks,
                                                     " chunks"));
    }
    int& other = seen[vs.stage() * chunks + vs.chunk()];
    if (other >= 0) {
      return absl::InvalidArgumentError(absl::StrCat("placement virtual stages ", other, " and ", v,
                                                     " are both stage ", vs.stage(), " chunk ", vs.chunk()));
    }
    other = v;
    grid.stage_of_[v] = vs.stage();
    grid.chunk_of_[v] = vs.chunk();
    grid.virtual_of_[vs.stage() * chunks + vs.chunk()] = v;
  }
  return grid;
}

std::vector<int> Grid::World() const {
  std::vector<int> out(world_size());
  for (int r = 0; r < world_size(); ++r) out[r] = r;
  return out;
}

std::vector<int> Grid::DataParallelGroup(int stage) const {
  std::vector<int> out;
  for (int d = 0; d < replicas_; ++d) out.push_back(Rank(stage, d));
  return out;
}

std::vector<int> Grid::PipelineGroup(int replica) const {
  std::vector<int> out;
  for (int s = 0; s < stages_; ++s) out.push_back(Rank(s, replica));
  return out;
}

std::vector<int> Grid::StagesGroup(const std::vector<int>& stages, int replica) const {
  std::vector<int> out;
  for (int s : stages) out.push_back(Rank(s, replica));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::pair<int, int>> Grid::Channels() const {
  std::vector<std::pair<int, int>> edges;
  for (int b = 0; b < boundaries(); ++b) {
    edges.push_back({StageOf(b), StageOf(b + 1)});  // activations
    edges.push_back({StageOf(b + 1), StageOf(b)});  // gradients
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  return edges;
}

std::string Grid::Describe(int rank) const {
  return absl::StrCat("rank ", rank, " (stage ", StageOfRank(rank), ", replica ", ReplicaOfRank(rank), ")");
}

}  // namespace ppc::ir
