#!/usr/bin/env bash
# A real local Hyperledger Fabric 2.5 network on 127.0.0.1, without Docker, for tests and users.
#
#   scripts/fabric-net.sh up   DIR         create DIR (empty or missing), start the network, deploy
#                                          the orchestrator chaincode on both channels
#   scripts/fabric-net.sh env  DIR [org1|org2]
#                                          print `export` lines: the network (default), or the
#                                          peer-CLI admin settings of one organization
#   scripts/fabric-net.sh down DIR         stop every process `up` started and remove DIR
#                                          (no error if already down)
#
# Typical use:
#   dir=$(mktemp -d) && scripts/fabric-net.sh up "$dir" && eval "$(scripts/fabric-net.sh env "$dir")"
#   ...
#   scripts/fabric-net.sh down "$dir"
#
# Environment:
#   FABRIC_BIN_DIR (required)   bin/ of a Fabric 2.5 release: peer, orderer, configtxgen,
#                               cryptogen, osnadmin; its sample config/ is expected beside it
#                               (override FABRIC_SAMPLE_CONFIG_DIR) and the CCaaS builder in
#                               ../builders/ccaas (override FABRIC_CCAAS_BUILDER_DIR)
#   CHAINCODE_BIN               the chaincode server (default $CARGO_TARGET_DIR/debug/chaincode,
#                               else target/debug/chaincode of this repository); build it with
#                               `cargo build -p orchestrator-host-fabric --bin chaincode`
#   FABRIC_CHAINCODE_NAME       chaincode name (default orchestrator)
#   FABRIC_CHAINCODE_NAMES      several chaincode names (space-separated, default just
#                               FABRIC_CHAINCODE_NAME): the same installed package is defined
#                               under each name on both channels, each name a state namespace of
#                               its own (isolated ledgers for tests); the first is the one `env`
#                               prints as ORCHESTRATOR_FABRIC_CHAINCODE. Definitions are approved
#                               and committed FABRIC_NET_JOBS at a time: 28 names take about 15 s
#                               on 2 cores (one name: under 2 s)
#   FABRIC_NET_EXTRA_ORGS       organizations without a peer (space-separated MSP ids
#                               MyOrg<N>MSP, N >= 3; default none): members of both channels
#                               whose User1 is in the wallet, so they can sign proposals that the
#                               peers of MyOrg1MSP and MyOrg2MSP endorse
#   FABRIC_NET_JOBS             peer CLI calls run at once while defining the chaincode
#                               (default 16)
#   FABRIC_NET_BASE_PORT        first port (default 27050); the network uses base..base+30
#   FABRIC_NET_TIMEOUT          seconds each readiness wait may take (default 60)
#   RUST_LOG, ORCHESTRATOR_COMPONENT, ORCHESTRATOR_CACHE_DIR, FABRIC_LOGGING_SPEC
#                               passed to the processes when set
#
# Network: one orderer (etcdraft, one consenter, OrdererMSP), organizations MyOrg1MSP and
# MyOrg2MSP with one peer each (Gateway on), channels mychannel and yourchannel joined by both
# peers, the chaincode as a service on both channels with the endorsement policy
# OR('MyOrg1MSP.peer','MyOrg2MSP.peer') (one organization's peer is enough). One chaincode server
# process serves both peers and both channels (both peers install the same package, so the
# package id is the same); the peers dial it in plaintext.
#
# Ports (base B): orderer B (clients), B+1 (admin, mutual TLS), B+2 (cluster), B+3 (operations);
# peer of MyOrg1MSP B+10 (peer and Gateway), B+11 (chaincode listener, unused), B+12
# (operations); peer of MyOrg2MSP B+20, B+21, B+22; chaincode server B+30.
#
# TLS everywhere (peers and orderer). A client must trust:
#   - a peer of MyOrg1MSP: DIR/crypto/peerOrganizations/org1.example.com/tlsca/tlsca.org1.example.com-cert.pem
#     (ORCHESTRATOR_FABRIC_TLS_CA_CERT), of MyOrg2MSP: the same under org2
#     (ORCHESTRATOR_FABRIC_PEER2_TLS_CA_CERT);
#   - the orderer: DIR/crypto/ordererOrganizations/example.com/tlsca/tlsca.example.com-cert.pem
#     (FABRIC_ORDERER_TLS_CA_CERT); the Gateway finds it in the channel configuration itself.
# Every server certificate names 127.0.0.1 and localhost (plus its Fabric host name).
#
# Layout of DIR: config/ (copied core.yaml, orderer.yaml), configtx/, crypto/ (cryptogen),
# channels/*.block, chaincode/ (package), data/ (ledgers), logs/*.log, pids/*.pid, bin/
# (symlinks, so every process's command line contains DIR), wallet/<MSP id>/{cert.pem,key.pem}
# (User1 of each organization; key in PKCS#8 PEM), admin-wallet/<MSP id>/{cert.pem,key.pem} (Admin
# of each organization: Subject OU=admin, what `orchestrator logic activate` signs with), env,
# org1.env, org2.env.
#
# With FABRIC_NET_EXTRA_ORGS, the organizations without a peer cannot endorse nor approve: the
# channels' LifecycleEndorsement and Endorsement policies then require the peers of MyOrg1MSP
# and MyOrg2MSP (what MAJORITY of the two peer organizations means without them), and `env`
# also prints FABRIC_NET_EXTRA_ORGS. With several chaincode names, it prints
# FABRIC_CHAINCODE_NAMES.
set -euo pipefail

PROG=fabric-net
CHANNELS=(mychannel yourchannel)
ORGS=(1 2)
CC_VERSION=1.0
CC_SEQUENCE=1
CC_POLICY="OR('MyOrg1MSP.peer','MyOrg2MSP.peer')"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() {
    echo "usage: $0 up DIR | env DIR [org1|org2] | down DIR" >&2
    exit 2
}

# Settings inherited from a shell that sourced org1.env (or a Fabric sample) would override
# the ones given below: every Fabric process and CLI call gets exactly what this script sets.
for _var in $(compgen -e); do
    case $_var in CORE_* | ORDERER_* | FABRIC_CFG_PATH) unset "$_var" ;; esac
done
unset _var

# ---------------------------------------------------------------- processes

# alive PID: the process exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# ours PID: a live process whose command line names DIR (guards against pid reuse).
ours() {
    alive "$1" || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$DIR/"* ]]
}

# start NAME CMD ARGS... (environment given as VAR=VALUE words through `env`).
start() {
    local name=$1
    shift
    (cd "$DIR" && exec "$@") </dev/null >"$DIR/logs/$name.log" 2>&1 &
    echo $! >"$DIR/pids/$name.pid"
}

pid_of() { cat "$DIR/pids/$1.pid" 2>/dev/null || true; }

tail_log() {
    local file=$1
    [[ -f $file ]] || return 0
    printf -- '----- last lines of %s -----\n' "$file" >&2
    tail -n "${2:-25}" "$file" >&2
    printf -- '-----\n' >&2
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# poll NAME WHAT COMMAND...: run COMMAND every 0.1 s until it succeeds; fail, showing the end
# of NAME's log, if the process NAME exits first or TIMEOUT passes.
poll() {
    local name=$1 what=$2 pid deadline=$((SECONDS + TIMEOUT)) file="$DIR/logs/$1.log"
    shift 2
    pid=$(pid_of "$name")
    until "$@"; do
        if ! alive "$pid"; then
            tail_log "$file"
            die "$name exited before $what (log: $file)"
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$file"
            die "$name: not $what within ${TIMEOUT}s (log: $file)"
        fi
        sleep 0.1
    done
}

# wait_port NAME PORT: until the process NAME listens on PORT.
wait_port() { poll "$1" "listening on 127.0.0.1:$2" port_open "$2"; }

# log_has FILE TEXT...: one line of FILE holds every TEXT.
log_has() {
    local lines text
    lines=$(grep -F -- "$2" "$1" || true)
    for text in "${@:3}"; do lines=$(grep -F -- "$text" <<<"$lines" || true); done
    [[ -n $lines ]]
}

# wait_log NAME TEXT...: until one line of NAME's log holds every TEXT.
wait_log() {
    local name=$1
    shift
    poll "$name" "logging '$*'" log_has "$DIR/logs/$name.log" "$@"
}

stop_all() {
    local pids=() file pid
    for file in "$DIR"/pids/*.pid; do
        [[ -f $file ]] || continue
        pid=$(cat "$file")
        if [[ $pid =~ ^[0-9]+$ ]] && ours "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    ((${#pids[@]})) || return 0
    local deadline=$((SECONDS + 5)) left
    while :; do
        left=()
        for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
        ((${#left[@]})) || break
        if ((SECONDS >= deadline)); then
            log "killing ${left[*]} (still running 5s after SIGTERM)"
            kill -KILL "${left[@]}" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    # Reap our own children (when `up` fails) so no zombie is left behind.
    wait 2>/dev/null || true
}

# ---------------------------------------------------------------- peer CLI

# cli ORG NAME ARGS...: run `peer ARGS` as ORG's admin against ORG's peer, output kept in
# logs/cli-NAME.log; on failure show its tail and fail. (Logging at info: `install` prints the
# package id in an INFO line.)
cli() {
    local org=$1 name=$2
    shift 2
    local out="$DIR/logs/cli-$name.log"
    if ! (set -a && . "$DIR/org$org.env" && FABRIC_LOGGING_SPEC=info && exec "$DIR/bin/peer" "$@") </dev/null >"$out" 2>&1; then
        tail_log "$out" 15
        die "peer $1 $2 failed ($name, as MyOrg${org}MSP admin)"
    fi
}

# retry_cli ORG NAME ARGS...: cli, retried for TIMEOUT seconds (for calls that are safe to repeat).
retry_cli() {
    local org=$1 name=$2 deadline=$((SECONDS + TIMEOUT))
    shift 2
    local out="$DIR/logs/cli-$name.log"
    while ! (set -a && . "$DIR/org$org.env" && FABRIC_LOGGING_SPEC=info && exec "$DIR/bin/peer" "$@") </dev/null >"$out" 2>&1; do
        if ((SECONDS >= deadline)); then
            tail_log "$out" 15
            die "peer $1 $2 kept failing for ${TIMEOUT}s ($name, as MyOrg${org}MSP admin)"
        fi
        cp "$out" "$out.failed"
        sleep 0.3
    done
}

# A bounded pool of background steps: pool_spawn FUNCTION ARGS... runs at most JOBS at once,
# pool_join WHAT waits for all (fails when any step failed).
POOL=()
POOL_FAILED=0
pool_wait_one() {
    local finished='' pid keep=()
    wait -n -p finished "${POOL[@]}" || POOL_FAILED=1
    if [[ -z ${finished:-} ]]; then
        # No step reported (none left to wait for): settle each one.
        for pid in "${POOL[@]}"; do wait "$pid" || POOL_FAILED=1; done
        POOL=()
        return 0
    fi
    for pid in "${POOL[@]}"; do [[ $pid == "$finished" ]] || keep+=("$pid"); done
    POOL=("${keep[@]}")
}
pool_spawn() {
    while ((${#POOL[@]} >= JOBS)); do pool_wait_one; done
    "$@" &
    POOL+=($!)
}
pool_join() {
    while ((${#POOL[@]})); do pool_wait_one; done
    ((POOL_FAILED == 0)) || die "$1 failed (see above)"
}

# Background steps: spawn FUNCTION ARGS..., then join (fails when any step failed).
BG=()
spawn() {
    "$@" &
    BG+=($!)
}
join() {
    local pid failed=0
    for pid in "${BG[@]}"; do wait "$pid" || failed=1; done
    BG=()
    ((failed == 0)) || die "$1 failed (see above)"
}

# ---------------------------------------------------------------- up

set_dir() {
    [[ -n ${1:-} ]] || usage
    DIR=$(realpath -m -- "$1")
    [[ $DIR != / ]] || die "refusing to use / as DIR"
}

check_binaries() {
    [[ -n ${FABRIC_BIN_DIR:-} ]] || die "FABRIC_BIN_DIR is not set (the bin/ directory of a Fabric 2.5 release)"
    FABRIC_BIN_DIR=$(realpath -m -- "$FABRIC_BIN_DIR")
    local bin missing=()
    for bin in peer orderer configtxgen cryptogen osnadmin; do
        [[ -x $FABRIC_BIN_DIR/$bin ]] || missing+=("$bin")
    done
    ((${#missing[@]} == 0)) || die "FABRIC_BIN_DIR=$FABRIC_BIN_DIR lacks ${missing[*]}"
    SAMPLE_CONFIG=${FABRIC_SAMPLE_CONFIG_DIR:-$FABRIC_BIN_DIR/../config}
    [[ -f $SAMPLE_CONFIG/core.yaml && -f $SAMPLE_CONFIG/orderer.yaml ]] ||
        die "no core.yaml/orderer.yaml in $SAMPLE_CONFIG (set FABRIC_SAMPLE_CONFIG_DIR)"
    BUILDER=$(realpath -m -- "${FABRIC_CCAAS_BUILDER_DIR:-$FABRIC_BIN_DIR/../builders/ccaas}")
    [[ -x $BUILDER/bin/detect && -x $BUILDER/bin/build && -x $BUILDER/bin/release ]] ||
        die "no CCaaS builder (bin/detect, build, release) in $BUILDER (set FABRIC_CCAAS_BUILDER_DIR)"
    local default_cc=$REPO_DIR/target/debug/chaincode
    [[ -z ${CARGO_TARGET_DIR:-} ]] || default_cc=$CARGO_TARGET_DIR/debug/chaincode
    CC_BIN=$(realpath -m -- "${CHAINCODE_BIN:-$default_cc}")
    [[ -x $CC_BIN ]] || die "no chaincode server at $CC_BIN (set CHAINCODE_BIN, or build it: cargo build -p orchestrator-host-fabric --bin chaincode)"
}

set_ports() {
    BASE=${FABRIC_NET_BASE_PORT:-27050}
    [[ $BASE =~ ^[0-9]+$ ]] && ((BASE >= 1024 && BASE <= 65535 - 30)) ||
        die "FABRIC_NET_BASE_PORT=$BASE: want a number from 1024 to 65505"
    local reserved
    for reserved in 1883 3306 4222 5432 5672 6379 8484 9000; do
        ((reserved < BASE || reserved > BASE + 30)) ||
            die "FABRIC_NET_BASE_PORT=$BASE: range $BASE-$((BASE + 30)) holds port $reserved (used by other services)"
    done
    ORDERER_PORT=$BASE ORDERER_ADMIN_PORT=$((BASE + 1)) ORDERER_CLUSTER_PORT=$((BASE + 2)) ORDERER_OPS_PORT=$((BASE + 3))
    PEER_PORT[1]=$((BASE + 10)) PEER_CC_PORT[1]=$((BASE + 11)) PEER_OPS_PORT[1]=$((BASE + 12))
    PEER_PORT[2]=$((BASE + 20)) PEER_CC_PORT[2]=$((BASE + 21)) PEER_OPS_PORT[2]=$((BASE + 22))
    CC_PORT=$((BASE + 30))
    local port busy=()
    for port in $ORDERER_PORT $ORDERER_ADMIN_PORT $ORDERER_CLUSTER_PORT $ORDERER_OPS_PORT \
        "${PEER_PORT[@]}" "${PEER_CC_PORT[@]}" "${PEER_OPS_PORT[@]}" $CC_PORT; do
        ! port_open "$port" || busy+=("$port")
    done
    ((${#busy[@]} == 0)) || die "ports in use on 127.0.0.1: ${busy[*]} (another network? set FABRIC_NET_BASE_PORT)"
}

write_crypto_config() {
    cat >"$DIR/crypto-config.yaml" <<'EOF'
# cryptogen spec: TLS certificates name 127.0.0.1 and localhost; NodeOUs give the
# admin/peer/client/orderer roles the policies use.
OrdererOrgs:
  - Name: Orderer
    Domain: example.com
    EnableNodeOUs: true
    Specs:
      - Hostname: orderer
        SANS: [localhost, 127.0.0.1]
PeerOrgs:
  - Name: MyOrg1
    Domain: org1.example.com
    EnableNodeOUs: true
    Template:
      Count: 1
      SANS: [localhost, 127.0.0.1]
    Users:
      Count: 1
  - Name: MyOrg2
    Domain: org2.example.com
    EnableNodeOUs: true
    Template:
      Count: 1
      SANS: [localhost, 127.0.0.1]
    Users:
      Count: 1
EOF
    local n
    for n in "${EXTRA_ORGS[@]}"; do
        cat >>"$DIR/crypto-config.yaml" <<EOF
  - Name: MyOrg$n
    Domain: org$n.example.com
    EnableNodeOUs: true
    Template:
      Count: 0
    Users:
      Count: 1
EOF
    done
}

write_configtx() {
    local ord=$DIR/crypto/ordererOrganizations/example.com
    mkdir -p "$DIR/configtx"
    {
        cat <<EOF
# Channel configuration of both channels (one profile; configtxgen -channelID names each).
Organizations:
  - &OrdererOrg
    Name: OrdererMSP
    ID: OrdererMSP
    MSPDir: $ord/msp
    Policies:
      Readers: {Type: Signature, Rule: "OR('OrdererMSP.member')"}
      Writers: {Type: Signature, Rule: "OR('OrdererMSP.member')"}
      Admins: {Type: Signature, Rule: "OR('OrdererMSP.admin')"}
    OrdererEndpoints:
      - 127.0.0.1:$ORDERER_PORT
EOF
        # One section per organization; only those that run a peer have an anchor peer.
        local org
        for org in "${ORGS[@]}" "${EXTRA_ORGS[@]}"; do
            cat <<EOF
  - &Org$org
    Name: MyOrg${org}MSP
    ID: MyOrg${org}MSP
    MSPDir: $DIR/crypto/peerOrganizations/org$org.example.com/msp
    Policies:
      Readers: {Type: Signature, Rule: "OR('MyOrg${org}MSP.admin','MyOrg${org}MSP.peer','MyOrg${org}MSP.client')"}
      Writers: {Type: Signature, Rule: "OR('MyOrg${org}MSP.admin','MyOrg${org}MSP.client')"}
      Admins: {Type: Signature, Rule: "OR('MyOrg${org}MSP.admin')"}
      Endorsement: {Type: Signature, Rule: "OR('MyOrg${org}MSP.peer')"}
EOF
            if [ -n "${PEER_PORT[$org]:-}" ]; then
                cat <<EOF
    AnchorPeers:
      - Host: 127.0.0.1
        Port: ${PEER_PORT[$org]}
EOF
            fi
        done
        local endorsement='{Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}'
        if ((${#EXTRA_ORGS[@]})); then
            # Organizations without a peer can neither approve nor endorse: a majority of all
            # organizations could be out of reach.
            endorsement="{Type: Signature, Rule: \"AND('MyOrg1MSP.peer','MyOrg2MSP.peer')\"}"
        fi
        cat <<EOF
Capabilities:
  Channel: &ChannelCapabilities {V2_0: true}
  Orderer: &OrdererCapabilities {V2_0: true}
  Application: &ApplicationCapabilities {V2_5: true}
Application: &ApplicationDefaults
  Organizations:
  Policies:
    LifecycleEndorsement: $endorsement
    Endorsement: $endorsement
    Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
    Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
    Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
  Capabilities: *ApplicationCapabilities
Orderer: &OrdererDefaults
  OrdererType: etcdraft
  # The sample's 2s would delay every lone transaction by up to 2s.
  BatchTimeout: 500ms
  BatchSize:
    MaxMessageCount: 500
    AbsoluteMaxBytes: 10 MB
    PreferredMaxBytes: 2 MB
  EtcdRaft:
    Consenters:
      - Host: 127.0.0.1
        Port: $ORDERER_CLUSTER_PORT
        ClientTLSCert: $ord/orderers/orderer.example.com/tls/server.crt
        ServerTLSCert: $ord/orderers/orderer.example.com/tls/server.crt
    # A short tick: the lone consenter elects itself about 1s after the channel is created.
    Options:
      TickInterval: 100ms
      ElectionTick: 10
      HeartbeatTick: 1
      MaxInflightBlocks: 5
      SnapshotIntervalSize: 16 MB
  Organizations:
    - *OrdererOrg
  Policies:
    Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
    Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
    Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
    BlockValidation: {Type: ImplicitMeta, Rule: "ANY Writers"}
  Capabilities: *OrdererCapabilities
Channel: &ChannelDefaults
  Policies:
    Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
    Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
    Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
  Capabilities: *ChannelCapabilities
Profiles:
  TwoOrgsChannel:
    <<: *ChannelDefaults
    Orderer:
      <<: *OrdererDefaults
    Application:
      <<: *ApplicationDefaults
      Organizations:
        - *Org1
        - *Org2
EOF
        for org in "${EXTRA_ORGS[@]}"; do echo "        - *Org$org"; done
    } >"$DIR/configtx/configtx.yaml"
}

# The sample core.yaml with no Docker and the CCaaS builder; every other setting comes from
# the environment of each peer.
write_core_config() {
    mkdir -p "$DIR/config"
    cp "$SAMPLE_CONFIG/core.yaml" "$SAMPLE_CONFIG/orderer.yaml" "$DIR/config/"
    chmod u+w "$DIR/config/"*.yaml
    local core=$DIR/config/core.yaml
    sed -i -e 's#^\(\s*endpoint:\) unix:///var/run/docker.sock#\1 ""#' \
        -e "s#^\(\s*path:\) /opt/hyperledger/ccaas_builder#\1 $BUILDER#" "$core"
    grep -q "path: $BUILDER\$" "$core" && grep -q '^    endpoint: ""$' "$core" ||
        die "could not edit $core (vm.endpoint, chaincode.externalBuilders): unexpected sample core.yaml"
}

org_paths() { # org → ORG_DOMAIN, ORG_MSP, PEER_HOME, TLS_CA
    ORG_DOMAIN=org$1.example.com
    ORG_MSP=MyOrg$1MSP
    PEER_HOME=$DIR/crypto/peerOrganizations/$ORG_DOMAIN/peers/peer0.$ORG_DOMAIN
    TLS_CA=$DIR/crypto/peerOrganizations/$ORG_DOMAIN/tlsca/tlsca.$ORG_DOMAIN-cert.pem
}

write_env_files() {
    local org q
    for org in "${ORGS[@]}"; do
        org_paths "$org"
        {
            echo "# peer CLI as the admin of $ORG_MSP against its peer: set -a; . $DIR/org$org.env; set +a"
            printf 'export FABRIC_CFG_PATH=%q\n' "$DIR/config"
            echo "export CORE_PEER_TLS_ENABLED=true"
            printf 'export CORE_PEER_LOCALMSPID=%q\n' "$ORG_MSP"
            printf 'export CORE_PEER_ADDRESS=%q\n' "127.0.0.1:${PEER_PORT[$org]}"
            printf 'export CORE_PEER_TLS_ROOTCERT_FILE=%q\n' "$TLS_CA"
            printf 'export CORE_PEER_MSPCONFIGPATH=%q\n' "$DIR/crypto/peerOrganizations/$ORG_DOMAIN/users/Admin@$ORG_DOMAIN/msp"
            printf 'export FABRIC_ORDERER_ADDRESS=%q\n' "127.0.0.1:$ORDERER_PORT"
            printf 'export FABRIC_ORDERER_TLS_CA_CERT=%q\n' "$ORDERER_TLS_CA"
        } >"$DIR/org$org.env"
    done
    org_paths 1
    local tls1=$TLS_CA
    org_paths 2
    {
        echo "# the network of $0 up $DIR"
        printf 'export FABRIC_NET_DIR=%q\n' "$DIR"
        printf 'export ORCHESTRATOR_FABRIC_PEER_ADDRESS=%q\n' "127.0.0.1:${PEER_PORT[1]}"
        printf 'export ORCHESTRATOR_FABRIC_TLS_CA_CERT=%q\n' "$tls1"
        printf 'export ORCHESTRATOR_FABRIC_PEER2_ADDRESS=%q\n' "127.0.0.1:${PEER_PORT[2]}"
        printf 'export ORCHESTRATOR_FABRIC_PEER2_TLS_CA_CERT=%q\n' "$TLS_CA"
        printf 'export ORCHESTRATOR_FABRIC_WALLET=%q\n' "$DIR/wallet"
        printf 'export ORCHESTRATOR_FABRIC_ADMIN_WALLET=%q\n' "$DIR/admin-wallet"
        printf 'export ORCHESTRATOR_FABRIC_CHAINCODE=%q\n' "$CC_NAME"
        printf 'export FABRIC_ORDERER_ADDRESS=%q\n' "127.0.0.1:$ORDERER_PORT"
        printf 'export FABRIC_ORDERER_TLS_CA_CERT=%q\n' "$ORDERER_TLS_CA"
        printf 'export FABRIC_CHANNELS=%q\n' "${CHANNELS[*]}"
        printf 'export FABRIC_CHAINCODE_PACKAGE_ID=%q\n' "$PACKAGE_ID"
        printf 'export FABRIC_CHAINCODE_SERVER_ADDRESS=%q\n' "127.0.0.1:$CC_PORT"
        printf 'export FABRIC_CHAINCODE_PID_FILE=%q\n' "$DIR/pids/chaincode.pid"
        printf 'export FABRIC_ORG1_ENV=%q\n' "$DIR/org1.env"
        printf 'export FABRIC_ORG2_ENV=%q\n' "$DIR/org2.env"
        ((${#CC_NAMES[@]} == 1)) || printf 'export FABRIC_CHAINCODE_NAMES=%q\n' "${CC_NAMES[*]}"
        if ((${#EXTRA_ORGS[@]})); then
            local extra=() n
            for n in "${EXTRA_ORGS[@]}"; do extra+=("MyOrg${n}MSP"); done
            printf 'export FABRIC_NET_EXTRA_ORGS=%q\n' "${extra[*]}"
        fi
    } >"$DIR/env"
}

write_package() {
    local src=$DIR/chaincode/src pkg=$DIR/chaincode/pkg
    mkdir -p "$src" "$pkg"
    printf '{"address":"127.0.0.1:%s","dial_timeout":"10s","tls_required":false}\n' "$CC_PORT" >"$src/connection.json"
    printf '{"type":"ccaas","label":"%s"}\n' "$CC_LABEL" >"$pkg/metadata.json"
    tar -C "$src" -czf "$pkg/code.tar.gz" connection.json
    PACKAGE=$DIR/chaincode/$CC_NAME.tar.gz
    tar -C "$pkg" -czf "$PACKAGE" metadata.json code.tar.gz
    # The package id Fabric computes: label ':' hex SHA-256 of the package file.
    PACKAGE_ID=$CC_LABEL:$(sha256sum "$PACKAGE" | cut -d' ' -f1)
}

start_orderer() {
    local home=$DIR/crypto/ordererOrganizations/example.com/orderers/orderer.example.com
    local ca=$DIR/crypto/ordererOrganizations/example.com/tlsca/tlsca.example.com-cert.pem
    # `up` waits for the etcdraft INFO line "Raft leader changed": keep that logger at info.
    start orderer env FABRIC_CFG_PATH="$DIR/config" \
        FABRIC_LOGGING_SPEC="${FABRIC_LOGGING_SPEC:-info}:orderer.consensus.etcdraft=info" \
        ORDERER_GENERAL_LISTENADDRESS=127.0.0.1 \
        ORDERER_GENERAL_LISTENPORT="$ORDERER_PORT" \
        ORDERER_GENERAL_LOCALMSPID=OrdererMSP \
        ORDERER_GENERAL_LOCALMSPDIR="$home/msp" \
        ORDERER_GENERAL_BOOTSTRAPMETHOD=none \
        ORDERER_GENERAL_TLS_ENABLED=true \
        ORDERER_GENERAL_TLS_CERTIFICATE="$home/tls/server.crt" \
        ORDERER_GENERAL_TLS_PRIVATEKEY="$home/tls/server.key" \
        ORDERER_GENERAL_TLS_ROOTCAS="[$home/tls/ca.crt]" \
        ORDERER_GENERAL_CLUSTER_LISTENADDRESS=127.0.0.1 \
        ORDERER_GENERAL_CLUSTER_LISTENPORT="$ORDERER_CLUSTER_PORT" \
        ORDERER_GENERAL_CLUSTER_SERVERCERTIFICATE="$home/tls/server.crt" \
        ORDERER_GENERAL_CLUSTER_SERVERPRIVATEKEY="$home/tls/server.key" \
        ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE="$home/tls/server.crt" \
        ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY="$home/tls/server.key" \
        ORDERER_GENERAL_CLUSTER_ROOTCAS="[$home/tls/ca.crt]" \
        ORDERER_CHANNELPARTICIPATION_ENABLED=true \
        ORDERER_ADMIN_LISTENADDRESS="127.0.0.1:$ORDERER_ADMIN_PORT" \
        ORDERER_ADMIN_TLS_ENABLED=true \
        ORDERER_ADMIN_TLS_CERTIFICATE="$home/tls/server.crt" \
        ORDERER_ADMIN_TLS_PRIVATEKEY="$home/tls/server.key" \
        ORDERER_ADMIN_TLS_ROOTCAS="[$home/tls/ca.crt]" \
        ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED=true \
        ORDERER_ADMIN_TLS_CLIENTROOTCAS="[$ca]" \
        ORDERER_OPERATIONS_LISTENADDRESS="127.0.0.1:$ORDERER_OPS_PORT" \
        ORDERER_METRICS_PROVIDER=disabled \
        ORDERER_FILELEDGER_LOCATION="$DIR/data/orderer" \
        ORDERER_CONSENSUS_WALDIR="$DIR/data/orderer/etcdraft/wal" \
        ORDERER_CONSENSUS_SNAPDIR="$DIR/data/orderer/etcdraft/snapshot" \
        "$DIR/bin/orderer"
}

start_peer() {
    local org=$1
    org_paths "$org"
    local address=127.0.0.1:${PEER_PORT[$org]}
    start "peer$org" env FABRIC_CFG_PATH="$DIR/config" \
        CORE_PEER_ID="peer0.$ORG_DOMAIN" \
        CORE_PEER_LOCALMSPID="$ORG_MSP" \
        CORE_PEER_MSPCONFIGPATH="$PEER_HOME/msp" \
        CORE_PEER_LISTENADDRESS="$address" \
        CORE_PEER_ADDRESS="$address" \
        CORE_PEER_CHAINCODELISTENADDRESS="127.0.0.1:${PEER_CC_PORT[$org]}" \
        CORE_PEER_CHAINCODEADDRESS="127.0.0.1:${PEER_CC_PORT[$org]}" \
        CORE_PEER_GOSSIP_BOOTSTRAP="$address" \
        CORE_PEER_GOSSIP_ENDPOINT="$address" \
        CORE_PEER_GOSSIP_EXTERNALENDPOINT="$address" \
        CORE_PEER_GATEWAY_ENABLED=true \
        CORE_PEER_TLS_ENABLED=true \
        CORE_PEER_TLS_CERT_FILE="$PEER_HOME/tls/server.crt" \
        CORE_PEER_TLS_KEY_FILE="$PEER_HOME/tls/server.key" \
        CORE_PEER_TLS_ROOTCERT_FILE="$PEER_HOME/tls/ca.crt" \
        CORE_PEER_FILESYSTEMPATH="$DIR/data/peer$org" \
        CORE_LEDGER_SNAPSHOTS_ROOTDIR="$DIR/data/peer$org/snapshots" \
        CORE_OPERATIONS_LISTENADDRESS="127.0.0.1:${PEER_OPS_PORT[$org]}" \
        CORE_METRICS_PROVIDER=disabled \
        "$DIR/bin/peer" node start
}

start_chaincode() {
    start chaincode env CHAINCODE_ID="$PACKAGE_ID" \
        CHAINCODE_SERVER_ADDRESS="127.0.0.1:$CC_PORT" \
        CHAINCODE_TLS_DISABLED=true \
        CHAINCODE_SHUTDOWN_GRACE="${CHAINCODE_SHUTDOWN_GRACE:-2s}" \
        "$DIR/bin/chaincode"
}

osn_join() {
    local ch=$1 user=$DIR/crypto/ordererOrganizations/example.com/users/Admin@example.com/tls
    local out=$DIR/logs/cli-osnadmin-join-$ch.log
    if ! "$DIR/bin/osnadmin" channel join --channelID "$ch" --config-block "$DIR/channels/$ch.block" \
        -o "127.0.0.1:$ORDERER_ADMIN_PORT" --ca-file "$ORDERER_TLS_CA" \
        --client-cert "$user/client.crt" --client-key "$user/client.key" </dev/null >"$out" 2>&1; then
        tail_log "$out" 15
        die "osnadmin channel join $ch failed"
    fi
}

install() {
    local org=$1
    cli "$org" "install-org$org" lifecycle chaincode install "$PACKAGE"
    local id
    id=$(sed -n 's/.*Chaincode code package identifier: \([^ ]*\).*/\1/p' "$DIR/logs/cli-install-org$org.log" | tail -n1)
    [[ $id == "$PACKAGE_ID" ]] || tail_log "$DIR/logs/cli-install-org$org.log" 15
    [[ $id == "$PACKAGE_ID" ]] || die "peer of MyOrg${org}MSP installed the package as '$id', expected $PACKAGE_ID"
}

# The CLI log name of a step for chaincode NAME: the first name keeps the plain names.
step_name() {
    local step=$1 name=$2
    [[ $name == "$CC_NAME" ]] && echo "$step" || echo "$step-$name"
}

ORDERER_ARGS=()
approve() {
    local org=$1 ch=$2 name=${3:-$CC_NAME}
    retry_cli "$org" "$(step_name "approve-org$org-$ch" "$name")" lifecycle chaincode approveformyorg "${ORDERER_ARGS[@]}" \
        --channelID "$ch" --name "$name" --version "$CC_VERSION" --sequence "$CC_SEQUENCE" \
        --package-id "$PACKAGE_ID" --signature-policy "$CC_POLICY" --waitForEvent
}

commit() {
    local ch=$1 name=${2:-$CC_NAME} org peers=()
    for org in "${ORGS[@]}"; do
        org_paths "$org"
        peers+=(--peerAddresses "127.0.0.1:${PEER_PORT[$org]}" --tlsRootCertFiles "$TLS_CA")
    done
    cli 1 "$(step_name "commit-$ch" "$name")" lifecycle chaincode commit "${ORDERER_ARGS[@]}" \
        --channelID "$ch" --name "$name" --version "$CC_VERSION" --sequence "$CC_SEQUENCE" \
        --signature-policy "$CC_POLICY" "${peers[@]}" --waitForEvent
}

# A read through the chaincode on one peer and channel: the peer has the definition and
# reaches the chaincode server (it dials it on the first transaction).
probe() {
    local org=$1 ch=$2 name=${3:-$CC_NAME}
    retry_cli "$org" "$(step_name "probe-org$org-$ch" "$name")" chaincode query -C "$ch" -n "$name" \
        -c '{"Args":["orchestrator.InfoService/QueryVersion"]}'
}

on_up_exit() {
    local rc=$?
    ((rc == 0)) && [[ -f $DIR/.up ]] && return 0
    trap - EXIT INT TERM
    log "up failed: stopping what it started and removing $DIR (set FABRIC_NET_KEEP=1 to keep it)"
    stop_all
    if [[ ${FABRIC_NET_KEEP:-} == 1 ]]; then
        log "kept $DIR (logs in $DIR/logs); remove it with: $0 down $DIR"
    else
        rm -rf -- "$DIR"
    fi
    exit $((rc == 0 ? 1 : rc))
}

cmd_up() {
    set_dir "$1"
    check_binaries
    CC_NAME=${FABRIC_CHAINCODE_NAME:-orchestrator}
    [[ $CC_NAME =~ ^[A-Za-z0-9][A-Za-z0-9_.+-]*$ ]] || die "FABRIC_CHAINCODE_NAME=$CC_NAME is not a valid chaincode name"
    read -r -a CC_NAMES <<<"${FABRIC_CHAINCODE_NAMES:-$CC_NAME}"
    ((${#CC_NAMES[@]})) || die "FABRIC_CHAINCODE_NAMES is empty"
    if [[ -n ${FABRIC_CHAINCODE_NAME:-} && ${CC_NAMES[0]} != "$CC_NAME" ]]; then
        die "FABRIC_CHAINCODE_NAMES must start with FABRIC_CHAINCODE_NAME=$CC_NAME (the name env prints)"
    fi
    CC_NAME=${CC_NAMES[0]}
    local name seen=' '
    for name in "${CC_NAMES[@]}"; do
        # Fabric's rule for chaincode names.
        [[ $name =~ ^[a-zA-Z0-9]+([-_][a-zA-Z0-9]+)*$ ]] || die "FABRIC_CHAINCODE_NAMES: '$name' is not a valid chaincode name"
        [[ $seen != *" $name "* ]] || die "FABRIC_CHAINCODE_NAMES: '$name' is given twice"
        seen+="$name "
    done
    CC_LABEL=${CC_NAME}_$CC_VERSION
    EXTRA_ORGS=()
    local msp
    for msp in ${FABRIC_NET_EXTRA_ORGS:-}; do
        [[ $msp =~ ^MyOrg([0-9]+)MSP$ ]] && ((BASH_REMATCH[1] >= 3)) ||
            die "FABRIC_NET_EXTRA_ORGS: '$msp' is not MyOrg<N>MSP with N >= 3"
        [[ " ${EXTRA_ORGS[*]} " != *" ${BASH_REMATCH[1]} "* ]] || die "FABRIC_NET_EXTRA_ORGS: '$msp' is given twice"
        EXTRA_ORGS+=("${BASH_REMATCH[1]}")
    done
    TIMEOUT=${FABRIC_NET_TIMEOUT:-60}
    [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "FABRIC_NET_TIMEOUT=$TIMEOUT: want seconds"
    JOBS=${FABRIC_NET_JOBS:-16}
    [[ $JOBS =~ ^[0-9]+$ ]] && ((JOBS >= 1)) || die "FABRIC_NET_JOBS=$JOBS: want a number >= 1"
    if [[ -e $DIR ]]; then
        [[ -d $DIR ]] || die "$DIR exists and is not a directory"
        [[ ! -e $DIR/.fabric-net ]] || die "$DIR already holds a network: run '$0 down $DIR' first"
        [[ -z $(ls -A "$DIR") ]] || die "$DIR is not empty"
    fi
    set_ports
    local started=$SECONDS
    mkdir -p "$DIR"/{logs,pids,bin,channels,data,wallet,admin-wallet}
    : >"$DIR/.fabric-net"
    trap on_up_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local b
    for b in peer orderer configtxgen cryptogen osnadmin; do ln -s "$FABRIC_BIN_DIR/$b" "$DIR/bin/$b"; done
    ln -s "$CC_BIN" "$DIR/bin/chaincode"
    ORDERER_TLS_CA=$DIR/crypto/ordererOrganizations/example.com/tlsca/tlsca.example.com-cert.pem
    ORDERER_ARGS=(-o "127.0.0.1:$ORDERER_PORT" --tls --cafile "$ORDERER_TLS_CA")

    log "crypto material, channel blocks and chaincode package in $DIR"
    write_crypto_config
    "$DIR/bin/cryptogen" generate --config="$DIR/crypto-config.yaml" --output="$DIR/crypto" \
        >"$DIR/logs/cryptogen.log" 2>&1 || { tail_log "$DIR/logs/cryptogen.log"; die "cryptogen failed"; }
    write_core_config
    write_configtx
    local ch
    for ch in "${CHANNELS[@]}"; do
        "$DIR/bin/configtxgen" -configPath "$DIR/configtx" -profile TwoOrgsChannel -channelID "$ch" \
            -outputBlock "$DIR/channels/$ch.block" >"$DIR/logs/configtxgen-$ch.log" 2>&1 ||
            { tail_log "$DIR/logs/configtxgen-$ch.log"; die "configtxgen $ch failed"; }
    done
    write_package
    write_env_files

    # The chaincode server first: loading the component takes a few seconds, meanwhile the
    # network comes up.
    log "starting chaincode server, orderer, peers (ports $BASE-$((BASE + 30)))"
    start_chaincode
    start_orderer
    local org
    for org in "${ORGS[@]}"; do start_peer "$org"; done

    wait_port orderer "$ORDERER_ADMIN_PORT"
    wait_port orderer "$ORDERER_PORT"
    for ch in "${CHANNELS[@]}"; do osn_join "$ch"; done
    for org in "${ORGS[@]}"; do wait_port "peer$org" "${PEER_PORT[$org]}"; done

    log "joining the peers to ${CHANNELS[*]}; installing $PACKAGE_ID"
    for org in "${ORGS[@]}"; do
        spawn install "$org"
        for ch in "${CHANNELS[@]}"; do spawn cli "$org" "join-org$org-$ch" channel join -b "$DIR/channels/$ch.block"; done
    done
    join "joining channels / installing the chaincode"

    # The orderer accepts transactions once the lone consenter leads each channel.
    for ch in "${CHANNELS[@]}"; do wait_log orderer "Raft leader changed: 0 -> 1" "channel=$ch"; done

    local defining=$SECONDS
    log "approving ${CC_NAMES[*]} for both organizations on ${CHANNELS[*]}"
    # Definitions of different names touch different keys: their transactions share blocks.
    for name in "${CC_NAMES[@]}"; do
        for ch in "${CHANNELS[@]}"; do
            for org in "${ORGS[@]}"; do pool_spawn approve "$org" "$ch" "$name"; done
        done
    done
    pool_join "approving the chaincode definition"
    # Once the definition is committed, each peer dials the chaincode server at once (and
    # again on the first transaction if that failed): have it listening by then.
    wait_port chaincode "$CC_PORT"
    log "committing ${CC_NAMES[*]} on ${CHANNELS[*]}"
    for name in "${CC_NAMES[@]}"; do
        for ch in "${CHANNELS[@]}"; do pool_spawn commit "$ch" "$name"; done
    done
    pool_join "committing the chaincode definition"

    for org in "${ORGS[@]}"; do
        for ch in "${CHANNELS[@]}"; do pool_spawn probe "$org" "$ch"; done
    done
    # Every other name once, on a peer and channel in turn: its definition is in place.
    local i
    for ((i = 1; i < ${#CC_NAMES[@]}; i++)); do
        pool_spawn probe "${ORGS[i % ${#ORGS[@]}]}" "${CHANNELS[(i / ${#ORGS[@]}) % ${#CHANNELS[@]}]}" "${CC_NAMES[i]}"
    done
    pool_join "calling the chaincode (QueryVersion)"
    ((${#CC_NAMES[@]} == 1)) ||
        log "${#CC_NAMES[@]} chaincode definitions on ${#CHANNELS[@]} channels in $((SECONDS - defining))s"

    for org in "${ORGS[@]}" "${EXTRA_ORGS[@]}"; do
        org_paths "$org"
        local user=$DIR/crypto/peerOrganizations/$ORG_DOMAIN/users/User1@$ORG_DOMAIN/msp
        mkdir -p "$DIR/wallet/$ORG_MSP"
        cp "$user/signcerts/"*.pem "$DIR/wallet/$ORG_MSP/cert.pem"
        cp "$user/keystore/"* "$DIR/wallet/$ORG_MSP/key.pem"
        local admin=$DIR/crypto/peerOrganizations/$ORG_DOMAIN/users/Admin@$ORG_DOMAIN/msp
        mkdir -p "$DIR/admin-wallet/$ORG_MSP"
        cp "$admin/signcerts/"*.pem "$DIR/admin-wallet/$ORG_MSP/cert.pem"
        cp "$admin/keystore/"* "$DIR/admin-wallet/$ORG_MSP/key.pem"
    done
    : >"$DIR/.up"
    trap - EXIT INT TERM
    log "up in $((SECONDS - started))s: eval \"\$($0 env $DIR)\"; stop with: $0 down $DIR"
}

# ---------------------------------------------------------------- env, down

cmd_env() {
    set_dir "$1"
    [[ -f $DIR/.up ]] || die "no network is up in $DIR"
    case ${2:-} in
        '') cat "$DIR/env" ;;
        org1 | org2) cat "$DIR/${2}.env" ;;
        *) usage ;;
    esac
}

cmd_down() {
    set_dir "$1"
    [[ -e $DIR ]] || return 0
    [[ -d $DIR ]] || die "$DIR is not a directory"
    # Only a directory `up` made (or an empty one) is removed.
    [[ -e $DIR/.fabric-net || -z $(ls -A "$DIR") ]] || die "$DIR was not made by '$0 up': not removing it"
    stop_all
    rm -rf -- "$DIR"
}

case ${1:-} in
    up) (($# == 2)) || usage; cmd_up "$2" ;;
    env) (($# == 2 || $# == 3)) || usage; cmd_env "$2" "${3:-}" ;;
    down) (($# == 2)) || usage; cmd_down "$2" ;;
    *) usage ;;
esac
