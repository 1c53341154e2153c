#!/bin/sh
# How the container test files were made (ffmpeg 5.1, Debian 12). Documentation only:
# the tests read the committed files and never run ffmpeg.
set -eu
cd "$(dirname "$0")"
FF="ffmpeg -hide_banner -loglevel error -y -bitexact"
V="-f lavfi -i testsrc=size=64x64:rate=5:duration=1"
A="-f lavfi -i sine=frequency=440:sample_rate=8000:duration=1"
X264="-c:v libx264 -preset ultrafast -crf 40 -pix_fmt yuv420p -g 2"
AAC="-c:a aac -b:a 16k"

# Non-fragmented MP4, moov written after mdat (the default).
$FF $V $A $X264 $AAC moov_end.mp4
# Same, rewritten by a second pass so that moov comes first.
$FF $V $A $X264 $AAC -movflags +faststart faststart.mp4
# Fragmented MP4: empty moov, one moof/mdat per keyframe (every 2 frames), mfra trailer.
$FF $V $A $X264 $AAC -movflags frag_keyframe+empty_moov fragmented.mp4
# Fragmented, without the mfra trailer: no marker of the end at all.
$FF $V $X264 -movflags frag_keyframe+empty_moov+skip_trailer fragmented_no_mfra.mp4
# QuickTime.
$FF $V $A $X264 $AAC -f mov clip.mov
# Audio only, M4A.
$FF $A $AAC audio.m4a
# MXF OP1a: MPEG-2 video and 48 kHz PCM (the MXF muxer's codecs).
$FF -f lavfi -i testsrc=size=64x64:rate=25:duration=0.2 \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=0.2 \
    -c:v mpeg2video -q:v 31 -c:a pcm_s16le -f mxf op1a.mxf
# WAV and RF64.
$FF -f lavfi -i sine=frequency=440:sample_rate=8000:duration=0.25 -c:a pcm_s16le tone.wav
$FF -f lavfi -i sine=frequency=440:sample_rate=8000:duration=0.25 -c:a pcm_s16le -rf64 always tone_rf64.wav
# AVI (RIFF too): MPEG-4 part 2 video, no audio.
$FF $V -c:v mpeg4 -q:v 31 -g 2 clip.avi
