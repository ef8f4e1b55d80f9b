// The one place that maps ranks, pipeline stages, data-parallel replicas, chunks and
// virtual stages, and names the process groups. No other file computes a rank.
//
//   rank = stage * D + replica            (data-parallel is the fastest-varying axis,
//                                          as DeepSpeed's PipeDataParallelTopology)
//   virtual stage v <-> (stage, chunk)    (the plan's placement table; Megatron's
//                                          round-robin puts v on stage v % P, chunk v / P)
//   boundary b: virtual stage b -> b + 1  (activations; gradients flow back)
#ifndef PPC_IR_TOPOLOGY_H_
#define PPC_IR_TOPOLOGY_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::ir {

class Grid {
 public:
  enum class Layout {
    kRoundRobin,  // v on stage v % P, chunk v / P (Megatron's interleaving)
    kV,           // two chunks: v < P on stage v chunk 0, v >= P on stage 2P-1-v chunk 1
  };
  // P stages x D replicas with V chunks per stage, placed round-robin or (V = 2) in a V.
  Grid(int stages, int replicas, int chunks, Layout layout = Layout::kRoundRobin);
  // From a plan's topology and placement. InvalidArgument when the placement is not a
  // bijection between virtual stages and (stage, chunk) with V chunks on every stage.
  static absl::StatusOr<Grid> Of(const Plan& plan);
  // The round-robin placement stage/chunk fields for `stages` x `chunks` virtual stages.
  static void RoundRobin(int stages, int chunks, Placement* placement);
  // The V placement's stage/chunk fields (two chunks per stage; rank r holds virtual
  // stages r and 2P-1-r, as the zero-bubble ZB-V and DualPipeV schedules place them).
  static void VShape(int stages, Placement* placement);
  // Whether this placement is the V (two chunks, v and 2P-1-v on one stage).
  bool IsV() const;
  // The V's placement of virtual stage v of 2P: (stage, chunk).
  static std::pair<int, int> VPlace(int v, int stages) {
    return v < stages ? std::pair<int, int>{v, 0} : std::pair<int, int>{2 * stages - 1 - v, 1};
  }

  int stages() const { return stages_; }
  int replicas() const { return replicas_; }
  int chunks() const { return chunks_; }
  int world_size() const { return stages_ * replicas_; }
  int virtual_stages() const { return stages_ * chunks_; }
  int boundaries() const { return virtual_stages() - 1; }

  int Rank(int stage, int replica) const { return stage * replicas_ + replica; }
  int StageOfRank(int rank) const { return rank / replicas_; }
  int ReplicaOfRank(int rank) const { return rank % replicas_; }

  int StageOf(int virtual_stage) const { return stage_of_[virtual_stage]; }
  int ChunkOf(int virtual_stage) const { return chunk_of_[virtual_stage]; }
  int VirtualOf(int stage, int chunk) const { return virtual_of_[stage * chunks_ + chunk]; }
  bool IsFirst(int virtual_stage) const { return virtual_stage == 0; }
  bool IsLast(int virtual_stage) const { return virtual_stage == virtual_stages() - 1; }

  // The virtual stage that sends / receives a transfer across `boundary`.
  int SenderOf(Direction direction, int boundary) const { return direction == GRADIENT ? boundary + 1 : boundary; }
  int ReceiverOf(Direction direction, int boundary) const { return direction == GRADIENT ? boundary : boundary + 1; }
  // The pipeline stage at the other end of a send (send) or receive (!send).
  int PeerStage(bool send, Direction direction, int boundary) const {
    return StageOf(send ? ReceiverOf(direction, boundary) : SenderOf(direction, boundary));
  }
  // The boundary a virtual stage receives its activations over (input) or sends them
  // over (output); -1 at the ends of the pipeline.
  int InputBoundary(int virtual_stage) const { return virtual_stage - 1; }
  int OutputBoundary(int virtual_stage) const { return IsLast(virtual_stage) ? -1 : virtual_stage; }

  // The ordered pairs of stages (from, to) that transfers may use: the stages at the two
  // ends of every boundary, both ways (activations and gradients); a stage with both
  // ends of a boundary (the V's turn) has the pair (s, s). Sorted, without repeats.
  std::vector<std::pair<int, int>> Channels() const;

  // Process groups, as sorted global ranks.
  std::vector<int> World() const;
  std::vector<int> DataParallelGroup(int stage) const;   // a stage's replicas
  std::vector<int> PipelineGroup(int replica) const;     // one replica's stages
  std::vector<int> StagesGroup(const std::vector<int>& stages, int replica) const;

  // "rank R (stage S, replica D)".
  std::string Describe(int rank) const;

 private:
  int stages_, replicas_, chunks_;
  std::vector<int> stage_of_, chunk_of_, virtual_of_;
};

}  // namespace ppc::ir

#endif  // PPC_IR_TOPOLOGY_H_
