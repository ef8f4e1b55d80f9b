// Assembly form of one instruction, driven by protobuf reflection so that a new
// instruction needs no printer code:  <oneof field name> <field>=<value> ...
// e.g. "forward mb=0 chunk=0 slot=1", "send_activation mb=2 chunk=0 slot=0 peer=1
// shape=[4,16] dtype=FLOAT32", "wait ops=[recv_activation/0/0,send_grad/1/0]".
// micro_batch is abbreviated "mb". Every field is printed, so the form is canonical.
#ifndef PPC_IR_INSTRUCTION_TEXT_H_
#define PPC_IR_INSTRUCTION_TEXT_H_

#include <string>

#include "absl/status/statusor.h"
#include "ir/program.pb.h"

namespace ppc::ir {

std::string PrintInstruction(const Instruction& instruction);
absl::StatusOr<Instruction> ParseInstruction(const std::string& line);

// Short form for timelines and errors: "F3", "B3", "B3i", "B3w", "send_activation mb=3".
std::string OpName(const Instruction& instruction);

// Micro-batch and chunk of any instruction that names them; false otherwise.
bool MicroBatchOf(const Instruction& instruction, int* micro_batch, int* chunk);

}  // namespace ppc::ir

#endif  // PPC_IR_INSTRUCTION_TEXT_H_
