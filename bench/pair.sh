# Shared by the shell benchmarks (sourced, not run): the two gateways'
# identities, a 1 KiB file served by nginx, and the head of a gateway's
# configuration. Expects STRAIT and dir to be set.

# A CA in $dir/ca and two gateway identities: $dir/w (gw-w, eu-west) and
# $dir/e (gw-e, us-east).
strait_pki() {
  "$STRAIT" ca init --trust-domain example.org --dir "$dir/ca" >/dev/null
  "$STRAIT" cert issue --ca "$dir/ca" --gateway --region eu-west --name gw-w --out "$dir/w" >/dev/null
  "$STRAIT" cert issue --ca "$dir/ca" --gateway --region us-east --name gw-e --out "$dir/e" >/dev/null
}

# Starts nginx in the background serving $dir/www/1k on 127.0.0.1:PORT
# with up to CONNECTIONS connections (default 4096); its pid is $!.
nginx_1k() { # port [connections]
  local port=$1 connections=${2:-4096} rlimit=""
  # More connections than the default open-file limit allows need more.
  [ "$connections" -gt 4096 ] && rlimit="worker_rlimit_nofile $((connections + 1024));"
  mkdir -p "$dir/www"
  head -c 1024 /dev/urandom >"$dir/www/1k"
  # nginx's workers run as nobody: the file must be readable by them (a
  # private temporary directory made every request a 153-byte 403).
  chmod 755 "$dir" "$dir/www"
  chmod 644 "$dir/www/1k"
  cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections $connections; }
$rlimit
http {
  access_log off;
  server { listen 127.0.0.1:$port; root $dir/www; }
}
CONF
  nginx -c "$dir/nginx.conf" &
}

# The [gateway] and [identity] sections of gw-w (WHO=w) or gw-e (WHO=e).
gateway_head() { # who region listen admin
  cat <<CONF
[gateway]
region = "$2"
listen = "$3"
admin = "$4"
[identity]
cert = "$1/cert.pem"
key = "$1/key.pem"
bundle = "$1/bundle.pem"
CONF
}
