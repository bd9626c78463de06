#!/usr/bin/env bash
# Re-runs one validation study from a clone, into validation/results/<run>/ (resumes if interrupted).
# Usage: bash validation/scripts/run.sh nb201_cifar10|nb201_cifar100|nb101_uniform|nb301_cifar10|nb201_stability|nb201_threads2 [extra zico-fast options]
# Needs the `validate` extra (scipy, matplotlib): pip install -e '.[validate]'. Everything read is
# in the repository (the bundled CIFAR-10 sample and zico_fast/data/nb201_dev.csv).
set -euo pipefail
cd "$(dirname "$0")/../.."
ZICO=${ZICO:-.venv/bin/zico-fast}
run=${1:?usage: run.sh nb201_cifar10|nb201_cifar100|nb101_uniform|nb301_cifar10|nb201_stability|nb201_threads2 [options]}
shift
out=validation/results/$run
case $run in
  # The paper's protocol on all 725 bundled NB201 rows: 2 batches of 128 real CIFAR-10 images, seed 0,
  # one thread per worker (scores depend on the thread count; workers only change the speed).
  nb201_cifar10) exec "$ZICO" correlate --space nb201 --proxies all --out "$out" --no-progress "$@" ;;
  # The same rows on CIFAR-100: 100-output networks, the bundled CIFAR-100 images, cifar100_test_acc.
  nb201_cifar100) exec "$ZICO" correlate --space nb201 --dataset cifar100 --proxies all --out "$out" --no-progress "$@" ;;
  # 400 of the 1,000 uniformly drawn NAS-Bench-101 cells (tens of seconds per network on a CPU).
  nb101_uniform) exec "$ZICO" correlate --space nb101 --truth nb101-uniform --sample 400 --seed 0 --proxies all \
    --out "$out" --no-progress "$@" ;;
  # All 425 NAS-Bench-301 (DARTS) rows, NASLib's network.
  nb301_cifar10) exec "$ZICO" correlate --space darts --proxies all --out "$out" --no-progress "$@" ;;
  # 100 rows x 3 batch draws (data seeds 0, 1, 2): how much the ranking moves with the batches.
  nb201_stability) exec "$ZICO" correlate --space nb201 --sample 100 --repeats 3 --out "$out" --no-progress "$@" ;;
  # The same 100 rows with two intra-op threads: how much float rounding moves the scores and the ranking.
  nb201_threads2) exec "$ZICO" correlate --space nb201 --sample 100 --threads 2 --out "$out" --no-progress "$@" ;;
  *) echo "unknown run $run; choose nb201_cifar10, nb201_cifar100, nb101_uniform, nb301_cifar10, nb201_stability or nb201_threads2" >&2; exit 2 ;;
esac
