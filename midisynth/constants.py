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

MAX_INPUT_TOKENS = 2048  # notes-encoder input length per window (padded with PAD)
STEPS_PER_SECOND = 100  # time-shift resolution of the event codec
MAX_SHIFT_SECONDS = 10

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL_TOKENS = 3

# Sub-folders of a diffusers-layout checkpoint that hold network weights (config.json + diffusion_pytorch_model.*).
DIFFUSERS_MODULES = ("notes_encoder", "continuous_encoder", "decoder")

# Rendering defaults (chosen by the held-out evaluation in the README), shared by the library and the CLI.
DEFAULT_SAMPLER = "dpmpp"
DEFAULT_GUIDANCE = 5.0  # classifier-free guidance weight (the paper's); 1 disables guidance
DEFAULT_PRECISION = "fp32"
