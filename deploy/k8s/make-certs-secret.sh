#!/bin/sh
# Creates the cluster CA and one certificate per pod (shoal-0 .. shoal-N-1), and prints the
# Secret `shoal-certs` holding ca.pem and every NAME.pem / NAME.key (not ca.key, which stays
# with you: keep CA_DIR safe to issue certificates for more pods later).
#
#   deploy/k8s/make-certs-secret.sh 5 ./shoal-ca | kubectl apply -f -
set -eu
N=${1:-5}
CA_DIR=${2:-./shoal-ca}
SHOAL=${SHOAL:-shoal}
[ -e "$CA_DIR/ca.pem" ] || "$SHOAL" certs init --dir "$CA_DIR" >&2
FILES="--from-file=ca.pem=$CA_DIR/ca.pem"
i=0
while [ "$i" -lt "$N" ]; do
  name="shoal-$i"
  [ -e "$CA_DIR/$name.pem" ] || "$SHOAL" certs issue --dir "$CA_DIR" --name "$name" >&2
  FILES="$FILES --from-file=$name.pem=$CA_DIR/$name.pem --from-file=$name.key=$CA_DIR/$name.key"
  i=$((i + 1))
done
# shellcheck disable=SC2086
kubectl create secret generic shoal-certs $FILES --dry-run=client -o yaml
