// Assembly form of one instruction, driven by protobuf reflection so that a new
// instruction needs no printer code:  <oneof field name> <field>=<value> ...
// e.g. "compute kind=FORWARD vs=0 mb=1 slot=1", "send direction=ACTIVATION boundary=0
// mb=2 slot=0", "wait ops=[recv/activation/0/2,send/gradient/1/0]" (a transfer is
// send|recv/direction/boundary/micro-batch). micro_batch is abbreviated "mb",
// virtual_stage "vs". Every field is printed, so the form is canonical, but for a mark
// that is off (Compute's deferred=true is printed, its false is left out).
#ifndef PPC_IR_INSTRUCTION_TEXT_H_
#define PPC_IR_INSTRUCTION_TEXT_H_

#include <string>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::ir {

std::string PrintInstruction(const Instruction& instruction);
absl::StatusOr<Instruction> ParseInstruction(const std::string& line);

// Short form for timelines and errors. Compute ops as torch.distributed.pipelining's
// actions, <virtual stage><F|B|I|W><micro-batch>: "0F3", "1B3", "1I3", "1W3" ("1w3": a
// deferred W, whose batch a later W computes);
// transfers "send act b0 mb=3"; others "<name>[ mb=N]".
std::string OpName(const Instruction& instruction);
const char* ComputeLetter(ComputeKind kind);
std::string CommRefText(const CommRef& ref);

// Micro-batch / slot of any instruction that names one; false otherwise.
bool MicroBatchOf(const Instruction& instruction, int* micro_batch);
bool SlotOf(const Instruction& instruction, int* slot);

}  // namespace ppc::ir

#endif  // PPC_IR_INSTRUCTION_TEXT_H_
