// dynrnn: recurrent neural networks over batches of variable-length sequences.
//
// One include for the whole library:
//
//   core/      types, reusable matrices, argument checks, random numbers, reusable GEMM, threads
//   precision/ bfloat16 and int8 products, with AVX-512 BF16/VNNI kernels chosen at run time
//   cells/     recurrent cells (LSTM, GRU, vanilla RNN, a stack of layers): forward and
//              backward through time on a packed batch; a cell frozen for inference
//   rnn/       dynamic_rnn, bidirectional_dynamic_rnn and their backward passes, the packed
//              layout and time loop, last-output gather
//   layers/    Dense, Embedding
//   losses/    softmax cross-entropy and mean squared error, per sample and per valid step
//   optim/     RMSProp, Adam, AdamW, SGD, Adagrad, gradient clipping, learning-rate schedules
//   distributed/  data-parallel training over a Communicator: gradient buckets, sharding,
//              broadcasts (mpi.hpp, the MPI communicator, is included on its own: it needs MPI)
//   model/     SequenceModel and fit()
//   io/        safetensors files, atomic checkpoints, LSTM, GRU and RNN weights from PyTorch, Keras, TensorFlow
#pragma once

#include "core/buffer_cache.hpp"
#include "core/check.hpp"
#include "core/gemm.hpp"
#include "core/parallel.hpp"
#include "core/random.hpp"
#include "core/reusable_matrix.hpp"
#include "core/types.hpp"
#include "core/version.hpp"

#include "precision/bfloat16_gemm.hpp"
#include "precision/mixed_gemm.hpp"
#include "precision/cpu_isa.hpp"
#include "precision/int8_gemm.hpp"

#include "cells/frozen_cell.hpp"
#include "cells/gru_cell.hpp"
#include "cells/hidden_state.hpp"
#include "cells/lstm_cell.hpp"
#include "cells/rnn_cell.hpp"
#include "cells/stacked_cell.hpp"

#include "rnn/bidirectional_dynamic_rnn.hpp"
#include "rnn/bidirectional_stack.hpp"
#include "rnn/dynamic_rnn.hpp"
#include "rnn/last_outputs.hpp"
#include "rnn/packed_schedule.hpp"
#include "rnn/time_loop.hpp"

#include "layers/dense.hpp"
#include "layers/embedding.hpp"

#include "losses/mean_squared_error.hpp"
#include "losses/reduction.hpp"
#include "losses/sequence_mean_squared_error.hpp"
#include "losses/sequence_softmax_cross_entropy.hpp"
#include "losses/softmax_cross_entropy.hpp"

#include "optim/adagrad.hpp"
#include "optim/adam.hpp"
#include "optim/clip.hpp"
#include "optim/optimizer.hpp"
#include "optim/rmsprop.hpp"
#include "optim/schedule.hpp"
#include "optim/sgd.hpp"

#include "distributed/communicator.hpp"
#include "distributed/data_parallel.hpp"
#include "distributed/gradient_buckets.hpp"

#include "model/fit.hpp"
#include "model/sequence_data.hpp"
#include "model/sequence_model.hpp"
#include "io/atomic_file.hpp"
#include "io/checkpoint.hpp"
#include "io/gru_import.hpp"
#include "io/lstm_import.hpp"
#include "io/module_import.hpp"
#include "io/read_tensors.hpp"
#include "io/rnn_import.hpp"
#include "io/safetensors.hpp"
