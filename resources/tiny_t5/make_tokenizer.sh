#!/usr/bin/env bash
# Regenerates tokenizer/ from corpus.txt: a tiny sentencepiece unigram model with the T5 conventions
# (nmt_nfkc normalisation, pad 0 / eos 1 / unk 2, no bos) plus the transformers T5Tokenizer files with
# 100 <extra_id_N> tokens. Needs spm_train (Debian: apt install sentencepiece) and python3.
# The output is deterministic; the committed files are what the tests and cvx_make_tiny use.
set -euo pipefail
cd "$(dirname "$0")"
vocab_size=${1:-256}
mkdir -p tokenizer
# Relative paths: spm_train stores them in the model, so the file only depends on the corpus.
spm_train --input=corpus.txt --model_prefix=tokenizer/spiece --vocab_size="$vocab_size" --model_type=unigram \
  --character_coverage=1.0 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --pad_piece='<pad>' \
  --eos_piece='</s>' --unk_piece='<unk>' --num_threads=1 --random_seed=1 --minloglevel=2
rm tokenizer/spiece.vocab
python3 - "$vocab_size" <<'PY'
import json, sys
pieces, extra = int(sys.argv[1]), 100
extra_ids = {f"<extra_id_{i}>": pieces - 1 + extra - i for i in range(extra)}
def token(content, strip):
    return {"content": content, "lstrip": strip, "normalized": False, "rstrip": strip,
            "single_word": False, "special": True}
def dump(name, value):
    with open(f"tokenizer/{name}", "w") as f:
        json.dump(value, f, indent=2, sort_keys=name != "special_tokens_map.json", ensure_ascii=False)
        f.write("\n")
dump("added_tokens.json", extra_ids)
names = list(extra_ids)
special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
dump("special_tokens_map.json", {"additional_special_tokens": names,
     **{k: {key: v for key, v in token(c, False).items() if key != "special"} for k, c in special.items()}})
decoder = {"0": token("<pad>", False), "1": token("</s>", False), "2": token("<unk>", False)}
decoder.update({str(i): token(c, True) for c, i in sorted(extra_ids.items(), key=lambda kv: kv[1])})
dump("tokenizer_config.json", {"add_prefix_space": True, "added_tokens_decoder": decoder,
     "additional_special_tokens": names, "clean_up_tokenization_spaces": True, "extra_ids": extra,
     "legacy": True, "model_max_length": 226, "sp_model_kwargs": {}, "tokenizer_class": "T5Tokenizer",
     **special})
PY
echo "make_tokenizer: wrote $(pwd)/tokenizer ($vocab_size pieces + 100 extra ids)"
