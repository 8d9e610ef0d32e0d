"""Constants of the Spectrogram Diffusion signal chain, named once and used everywhere.

Values follow Hawthorne et al. (ISMIR 2022) and the published checkpoint; see the design spec.
"""

import math

SAMPLE_RATE = 16_000  # Hz, mono
HOP_LENGTH = 320  # samples between frames
FRAME_RATE = SAMPLE_RATE // HOP_LENGTH  # 50 frames/s
WIN_LENGTH = 640  # samples, Hann window of the STFT
FFT_SIZE = 1024  # samples
N_MELS = 128  # mel bins
MEL_FMIN = 0.0  # Hz
MEL_FMAX = 8_000.0  # Hz

WINDOW_FRAMES = 256  # frames per generated window (segment)
WINDOW_SAMPLES = WINDOW_FRAMES * HOP_LENGTH  # 81 920 samples
WINDOW_SECONDS = WINDOW_FRAMES / FRAME_RATE  # 5.12 s

MIN_LOG_MEL = math.log(1e-5)  # natural-log floor of mel magnitude (≈ -11.513)
MAX_LOG_MEL = 4.0  # largest feature value the networks represent

# The note roll (midisynth.model.dynamics.note_roll): sounding notes by instrument group and pitch, then onsets by pitch.
ROLL_GROUPS = 17  # the 16 General MIDI program families, then drums
ROLL_PITCHES = 128  # MIDI pitches
ROLL_DIMS = ROLL_GROUPS * ROLL_PITCHES + ROLL_PITCHES

MAX_INPUT_TOKENS = 2048  # notes-encoder input length per window (padded with PAD)
STEPS_PER_SECOND = 100  # time-shift resolution of the event codec
MAX_SHIFT_SECONDS = 10

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL_TOKENS = 3

# Sub-folders of a diffusers-layout checkpoint that hold network weights (config.json + diffusion_pytorch_model.*).
DIFFUSERS_MODULES = ("notes_encoder", "continuous_encoder", "decoder")

# Rendering defaults (chosen by the held-out evaluation in the README), shared by the library and the CLI.
# Measured with the stage-2 model (docs/steps_curve.json; log-mel L1 / MR-STFT to the FluidSynth reference). On the
# first 6 held-out songs: DDIM 3 steps 1.443 / 2.562, DDIM 5 1.436 / 2.599, DPM-Solver++ 5 1.446 / 2.641, 10
# 1.544 / 2.816, 20 1.693 / 3.012 (more steps sharpen details the reference does not have). On all 13: DDIM 4
# 1.720 / 2.863, 8 1.698 / 2.895, 12 1.719 / 2.950, so 4 steps, the fastest. Guidance 3 (DPM-Solver++ 10, step
# 2000) scored 3.74 against 1.33 without, so it is off by default (the paper's 5 suits its large model; diffusers'
# pipeline has none). bf16 autocast scored as fp32 (1.4461 vs 1.4455) at 1.2x the speed; use --precision fp32 on
# CPUs without native bf16. The bundled stage-8 model (README: the note roll), all 13 songs: DDIM 3 1.183 / 2.285,
# 4 1.197 / 2.309, 8 1.232 / 2.359; guidance 1.5 at 4 steps 1.483 / 2.544.
DEFAULT_SAMPLER = "ddim"
DEFAULT_STEPS = 4  # the default sampler's step count
DEFAULT_GUIDANCE = 1.0  # classifier-free guidance weight; 1 disables guidance
DEFAULT_PRECISION = "bf16"
