#!/usr/bin/env bash
# TLS for `gpumix webhook` without cert-manager: a private CA, a serving certificate for the webhook
# Service's DNS names signed by it, the TLS Secret the Deployment mounts, and the CA in the
# MutatingWebhookConfiguration's caBundle (how the API server trusts the webhook).
#
#   deploy/webhook/certs.sh              make the files in a temp dir, store the Secret, patch caBundle (kubectl)
#   deploy/webhook/certs.sh --out DIR    only make ca.crt, ca.key, tls.crt, tls.key in DIR (no cluster needed)
#
# Environment: NAMESPACE (gpumix-system), SERVICE (gpumix-webhook), SECRET (gpumix-webhook-tls),
# WEBHOOK (gpumix-webhook, the MutatingWebhookConfiguration), DAYS (365), EXTRA_SANS (e.g. "IP:127.0.0.1").
# Re-run before DAYS run out. While the new CA is in caBundle but a pod still serves the old certificate
# (the kubelet refreshes mounted Secrets within about a minute; gpumix re-reads the files every --refresh),
# calls fail TLS and failurePolicy Ignore admits pods unchanged: rotation never blocks a rollout.
set -euo pipefail

NAMESPACE=${NAMESPACE:-gpumix-system}
SERVICE=${SERVICE:-gpumix-webhook}
SECRET=${SECRET:-gpumix-webhook-tls}
WEBHOOK=${WEBHOOK:-gpumix-webhook}
DAYS=${DAYS:-365}
OUT=""
if [[ "${1:-}" == "--out" ]]; then
  OUT=${2:?--out needs a directory}
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--out DIR]" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "certs.sh: openssl is needed" >&2; exit 2; }

DIR=${OUT:-$(mktemp -d)}
mkdir -p "$DIR"
[[ -n "$OUT" ]] || trap 'rm -rf "$DIR"' EXIT
umask 077

# The API server checks the name it dials (SERVICE.NAMESPACE.svc) against subjectAltName; CN is not read.
SANS="DNS:${SERVICE},DNS:${SERVICE}.${NAMESPACE},DNS:${SERVICE}.${NAMESPACE}.svc,DNS:${SERVICE}.${NAMESPACE}.svc.cluster.local"
[[ -z "${EXTRA_SANS:-}" ]] || SANS="${SANS},${EXTRA_SANS}"

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$DAYS" -subj "/CN=gpumix-webhook-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=${SERVICE}.${NAMESPACE}.svc" \
  -keyout "$DIR/tls.key" -out "$DIR/tls.csr" 2>/dev/null
cat > "$DIR/ext.cnf" <<CNF
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${SANS}
CNF
openssl x509 -req -sha256 -days "$DAYS" -in "$DIR/tls.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
  -CAcreateserial -extfile "$DIR/ext.cnf" -out "$DIR/tls.crt" 2>/dev/null
rm -f "$DIR/tls.csr" "$DIR/ext.cnf" "$DIR/ca.srl"
chmod 644 "$DIR/ca.crt" "$DIR/tls.crt"

if [[ -n "$OUT" ]]; then
  echo "wrote $DIR/ca.crt $DIR/ca.key $DIR/tls.crt $DIR/tls.key"
  exit 0
fi

command -v kubectl >/dev/null || { echo "certs.sh: kubectl is needed (or use --out DIR)" >&2; exit 2; }
kubectl -n "$NAMESPACE" create secret tls "$SECRET" --cert "$DIR/tls.crt" --key "$DIR/tls.key" \
  --dry-run=client -o yaml | kubectl apply -f -
CA_BUNDLE=$(base64 < "$DIR/ca.crt" | tr -d '\n')
kubectl patch mutatingwebhookconfiguration "$WEBHOOK" --type=json \
  -p "[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"${CA_BUNDLE}\"}]"
echo "secret ${NAMESPACE}/${SECRET} stored; caBundle of ${WEBHOOK} patched"
