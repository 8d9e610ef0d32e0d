"""Constants of the Spectrogram Diffusion signal chain, named once and used everywhere.

Values follow Hawthorne et al. (ISMIR 2022) and the published checkpoint.
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

# The velocity at which a note's level is 1 (gain 0) in the velocity gain (midisynth.model.note_inputs.velocity_gain)
# and the partials model (midisynth.model.partials): that of 73 % of the notes of the training data's music21 scores.
REFERENCE_VELOCITY = 90

# The note roll (midisynth.model.note_inputs.note_roll): sounding notes by instrument group and pitch, then onsets by pitch.
ROLL_GROUPS = 17  # the 16 General MIDI program families, then drums
ROLL_PITCHES = 128  # MIDI pitches
ROLL_DIMS = ROLL_GROUPS * ROLL_PITCHES + ROLL_PITCHES

MAX_INPUT_TOKENS = 2048  # notes-encoder input length per window (padded with PAD)
STEPS_PER_SECOND = 100  # time-shift resolution of the event codec
MAX_SHIFT_SECONDS = 10

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL_TOKENS = 3

# Songs longer or files larger than this are refused (midisynth.score.midi.SongLimits) unless the caller lifts the limit.
MAX_SONG_SECONDS = 4 * 3600.0
MAX_SONG_EVENTS = 1_000_000  # MIDI events, counted before parsing (about 0.4 GB to parse)

MIN_DATASET_HOURS = 0.01  # the least rendered audio a data set is asked to store (midisynth.data.build)

# Sub-folders of a diffusers-layout checkpoint that hold network weights (config.json + diffusion_pytorch_model.*).
DIFFUSERS_MODULES = ("notes_encoder", "continuous_encoder", "decoder")

# Network arithmetic of renders and training unless asked otherwise: bf16 autocast scores as fp32, so `auto`
# (midisynth.precision) computes in bf16 where the hardware has it natively and in fp32 elsewhere.
DEFAULT_PRECISION = "auto"  # see midisynth.precision
