#!/usr/bin/env bash
# The defense study swept over seeds (issue 12 item 6; SPEC sections 8 and 10).
#
# usage: bench/study_sweep.sh --out DIR --name CONFIG [options]
#
# For every seed: builds the synthetic world and pretrains its base with that seed
# (DIR/worlds/<model>-s<seed>, reused by every configuration of the same model size);
# aligns it with sft, vaccine and tvaccine (DIR/<CONFIG>/s<seed>/align/<method>);
# evaluates each aligned model before any attack (p "-") and after a harmful
# fine-tuning attack for each attack lr and p (DIR/<CONFIG>/s<seed>/attack/...);
# appends one row per (config, seed, method, attack lr, p) to DIR/results.tsv.
# Work already done (an adapter, an answers file) is reused, so an interrupted sweep
# resumes where it stopped and a new p or lr only costs its attacks.
#
# options (defaults in brackets):
#   --out DIR            sweep folder (required)
#   --name CONFIG        configuration label, the TSV's first column (required)
#   --seeds "1 2 3"      seeds; each has its own world and pretrained base
#   --layers 4 --width 64 --heads 4 --kv-heads 2 --ffn 172   model size of the base
#   --align-epochs 4     alignment epochs over the world's 800 rows (batch 16)
#   --rho 1.0            Vaccine / T-Vaccine perturbation norm
#   --S 1                T-Vaccine layers activated (of --layers)
#   --methods "sft vaccine tvaccine"
#   --attack-lrs "3e-4"  attack learning rates
#   --ps "0.1"           harmful fractions of the attack mix (n 1000)
#   --attack-steps 200   attack optimizer steps (batch 10)
#   --harmful-prompts 200  harmful test prompts judged (HS, refusal rate)
#   --benign-prompts 100   test prompts per benign task (FA sst, agnews, gsm)
#   --threads 2          CPU threads per command
#   --tvaccine BIN       the tvaccine binary [build/launch/tvaccine]
#
# Columns of results.tsv: config seed model method align_epochs align_steps rho S
# attack_lr p attack_steps HS refusal fa_sst fa_agnews fa_gsm align_s attack_s
# (align_s / attack_s: wall seconds of that run on this machine; p "-": no attack).
# The attack's benign task is sst, so fa_sst is the paper's FA; agnews and gsm are
# the second benign accuracies that tell a safe model from a broken one.
# Summarise with: python3 bench/study_summary.py DIR/results.tsv
set -euo pipefail

die() { echo "study_sweep: $*" >&2; exit 2; }
out="" name="" seeds="1 2 3" layers=4 width=64 heads=4 kv_heads=2 ffn=172
align_epochs=4 rho=1.0 S=1 methods="sft vaccine tvaccine" attack_lrs="3e-4" ps="0.1"
attack_steps=200 harmful_prompts=200 benign_prompts=100 threads=2
tv="$(cd "$(dirname "$0")/.." && pwd)/build/launch/tvaccine"
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "option $1 needs a value"
  case "$1" in
    --out) out=$2 ;; --name) name=$2 ;; --seeds) seeds=$2 ;;
    --layers) layers=$2 ;; --width) width=$2 ;; --heads) heads=$2 ;;
    --kv-heads) kv_heads=$2 ;; --ffn) ffn=$2 ;; --align-epochs) align_epochs=$2 ;;
    --rho) rho=$2 ;; --S) S=$2 ;; --methods) methods=$2 ;; --attack-lrs) attack_lrs=$2 ;;
    --ps) ps=$2 ;; --attack-steps) attack_steps=$2 ;;
    --harmful-prompts) harmful_prompts=$2 ;; --benign-prompts) benign_prompts=$2 ;;
    --threads) threads=$2 ;; --tvaccine) tv=$2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
  shift 2
done
[ -n "$out" ] || die "--out DIR is required"
[ -n "$name" ] || die "--name CONFIG is required"
[ -x "$tv" ] || die "$tv: not an executable (build first, or pass --tvaccine)"
case "$name" in *[[:space:]]*) die "--name must not contain blanks: '$name'" ;; esac

mkdir -p "$out"
tsv="$out/results.tsv"
[ -s "$tsv" ] || printf 'config\tseed\tmodel\tmethod\talign_epochs\talign_steps\trho\tS\tattack_lr\tp\tattack_steps\tHS\trefusal\tfa_sst\tfa_agnews\tfa_gsm\talign_s\tattack_s\n' > "$tsv"
model="L${layers}d${width}"
run() { nice -n 5 "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# json_field FILE KEY: a number from a one-line JSON summary of tvaccine eval.
json_field() { sed -n "s/.*\"$2\":\([-0-9.e]*\).*/\1/p" "$1"; }

# evaluate W MODEL ADAPTER DIR: HS, refusal and the three FAs of one model into DIR;
# prints "HS refusal fa_sst fa_agnews fa_gsm".
evaluate() {
  local w=$1 model_dir=$2 adapter=$3 dir=$4 adapter_opt=()
  [ -n "$adapter" ] && adapter_opt=(--adapter "$adapter")
  mkdir -p "$dir"
  if [ ! -s "$dir/harm_summary.json" ]; then
    run "$tv" generate --model "$model_dir" "${adapter_opt[@]}" --tokenizer "$w/tokenizer.json" \
      --prompts "$w/harmful_test.json" --out "$dir/harm.jsonl" --max-prompts "$harmful_prompts" \
      --max-new-tokens 48 --threads "$threads" > "$dir/generate.log" 2>&1
    "$tv" eval --answers "$dir/harm.jsonl" --judge synth --world "$w" \
      --summary "$dir/harm_summary.json" >> "$dir/eval.log" 2>&1
  fi
  local task fa=()
  for task in sst agnews gsm; do
    if [ ! -s "$dir/${task}_summary.json" ]; then
      run "$tv" generate --model "$model_dir" "${adapter_opt[@]}" --tokenizer "$w/tokenizer.json" \
        --prompts "$w/benign_${task}_test.json" --out "$dir/$task.jsonl" \
        --max-prompts "$benign_prompts" --max-new-tokens 32 --threads "$threads" \
        >> "$dir/generate.log" 2>&1
      "$tv" eval --answers "$dir/$task.jsonl" --task "$task" --world "$w" \
        --summary "$dir/${task}_summary.json" >> "$dir/eval.log" 2>&1
    fi
    fa+=("$(json_field "$dir/${task}_summary.json" fine_tune_accuracy)")
  done
  echo "$(json_field "$dir/harm_summary.json" harmful_score)" \
    "$(json_field "$dir/harm_summary.json" refusal_rate)" "${fa[@]}"
}

for seed in $seeds; do
  w="$out/worlds/$model-s$seed"
  if [ ! -s "$w/base/model.safetensors" ]; then
    echo "[$(date +%T)] seed $seed: world and base $model in $w"
    run "$tv" synth --out "$w" --seed "$seed" --layers "$layers" --width "$width" \
      --heads "$heads" --kv-heads "$kv_heads" --ffn "$ffn" --threads "$threads" \
      > "$w.synth.log" 2>&1 || die "synth failed, see $w.synth.log"
  fi
  base_eval="$out/worlds/$model-s$seed.eval"
  read -r hs refusal sst agnews gsm < <(evaluate "$w" "$w/base" "" "$base_eval")
  echo "[$(date +%T)] seed $seed: base HS $hs refusal $refusal FA sst $sst agnews $agnews gsm $gsm"
  for method in $methods; do
    a="$out/$name/s$seed/align/$method"
    align_s=$(cat "$a.seconds" 2>/dev/null || echo "")
    if [ ! -s "$a/adapter/adapter_model.safetensors" ]; then
      echo "[$(date +%T)] seed $seed: align $method (epochs $align_epochs, rho $rho, S $S)"
      mkdir -p "$(dirname "$a")"
      t0=$(now)
      run "$tv" align --config "$w/align.yaml" --out "$a" --overwrite --method "$method" \
        --seed "$seed" --rho "$rho" --epochs "$align_epochs" --threads "$threads" \
        --set model="$w/base" --set data="$w/align.json" \
        --set tvaccine.probe_data="$w/harmful_probe.json" --set tvaccine.S="$S" \
        > "$a.log" 2>&1 || die "align failed, see $a.log"
      align_s=$(elapsed "$t0")
      echo "$align_s" > "$a.seconds"
    fi
    align_steps=$(tail -n 1 "$a/log.jsonl" | sed -n 's/.*"step":\([0-9]*\).*/\1/p')
    read -r hs refusal sst agnews gsm < <(evaluate "$w" "$w/base" "$a/adapter" "$a.eval")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$name" "$seed" \
      "$model" "$method" "$align_epochs" "$align_steps" "$rho" "$S" "$hs" "$refusal" "$sst" \
      "$agnews" "$gsm" "$align_s" >> "$tsv"
    echo "[$(date +%T)] seed $seed: $method aligned: HS $hs refusal $refusal FA sst $sst"
    for lr in $attack_lrs; do
      for p in $ps; do
        k="$out/$name/s$seed/attack/$method-lr$lr-p$p"
        attack_s=$(cat "$k.seconds" 2>/dev/null || echo "")
        if [ ! -s "$k/run/adapter/adapter_model.safetensors" ]; then
          rm -rf "$k"
          mkdir -p "$(dirname "$k")"
          t0=$(now)
          run "$tv" attack --model "$w/base" --adapter "$a/adapter" \
            --tokenizer "$w" --harmful "$w/attack_harmful.json" \
            --benign "$w/benign_sst_train.json" --out "$k" --p "$p" --n 1000 --seed "$seed" \
            --set optim.lr="$lr" --set max_steps="$attack_steps" --set max_len=96 \
            --set threads="$threads" > "$k.log" 2>&1 || die "attack failed, see $k.log"
          attack_s=$(elapsed "$t0")
          echo "$attack_s" > "$k.seconds"
        fi
        read -r hs refusal sst agnews gsm < <(evaluate "$w" "$k/merged" "$k/run/adapter" "$k.eval")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
          "$name" "$seed" "$model" "$method" "$align_epochs" "$align_steps" "$rho" "$S" "$lr" \
          "$p" "$attack_steps" "$hs" "$refusal" "$sst" "$agnews" "$gsm" "$align_s" \
          "$attack_s" >> "$tsv"
        echo "[$(date +%T)] seed $seed: $method attacked (lr $lr, p $p): HS $hs refusal $refusal FA sst $sst agnews $agnews gsm $gsm"
      done
    done
  done
done
