{{/*
Shared helpers. Component helpers take a dict: (dict "root" $ "component" "gateway").
*/}}

{{/* The four services, in the order the chart renders them. */}}
{{- define "parley.components" -}}
gateway router presence history
{{- end }}

{{- define "parley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide prefix of every resource name. */}}
{{- define "parley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<component>": the prefix is cut to 50 so the component suffix always survives. */}}
{{- define "parley.componentName" -}}
{{- printf "%s-%s" (include "parley.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "parley.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "parley.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parley.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "parley.labels" -}}
helm.sh/chart: {{ include "parley.chart" .root }}
{{ include "parley.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: parley
{{- end }}

{{- define "parley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "parley.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "parley.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
Where other services reach a component: its headless Service's DNS name with
the dns:/// scheme. gRPC's DNS resolver gets every ready pod's IP, and the
round_robin policy that parley.grpcclient sets spreads calls over them; a
normal ClusterIP Service would pin each long-lived HTTP/2 connection (and so
every call of one client process) to whichever pod kube-proxy picked first.
*/}}
{{- define "parley.addr" -}}
{{- $c := index .root.Values .component -}}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "parley.componentName" .) .root.Release.Namespace .root.Values.clusterDomain (int $c.port) }}
{{- end }}

{{/* A component's drain deadline: its own drainSeconds, else the global one. */}}
{{- define "parley.drainSeconds" -}}
{{- $c := index .root.Values .component -}}
{{- if kindIs "invalid" $c.drainSeconds }}
{{- .root.Values.drainSeconds }}
{{- else }}
{{- $c.drainSeconds }}
{{- end }}
{{- end }}

{{/*
Checks that make a bad install fail at `helm install/template` time with a
message, instead of pods that crash or, worse, run insecurely. (helm lint
reports these as [INFO] without failing, so the chart lints with its defaults.)
*/}}
{{- define "parley.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.auth.algorithm (list "HS256" "RS256")) }}
{{- fail (printf "auth.algorithm must be HS256 or RS256, not %q" $v.auth.algorithm) }}
{{- end }}
{{- if and (not $v.redis.url) (not $v.redis.existingSecret) }}
{{- fail "redis.url (or redis.existingSecret) is required: Redis is an external dependency, e.g. --set redis.url=redis://redis.data.svc:6379/0" }}
{{- end }}
{{- if not $v.cassandra.hosts }}
{{- fail "cassandra.hosts is required: Cassandra is an external dependency, e.g. --set 'cassandra.hosts={cassandra-0.cassandra.data.svc}'" }}
{{- end }}
{{- $levels := list "ONE" "TWO" "THREE" "QUORUM" "ALL" "LOCAL_QUORUM" "EACH_QUORUM" "LOCAL_ONE" }}
{{- range $key := list "readConsistency" "writeConsistency" }}
{{- if not (has (index $v.cassandra $key) $levels) }}
{{- fail (printf "cassandra.%s must be one of %s, got %q" $key (join ", " $levels) (index $v.cassandra $key)) }}
{{- end }}
{{- end }}
{{- if lt (int $v.cassandra.replicationFactor) 1 }}
{{- fail (printf "cassandra.replicationFactor must be at least 1, got %d" (int $v.cassandra.replicationFactor)) }}
{{- end }}
{{- if and (not (kindIs "invalid" $v.redis.waitReplicas)) (lt (int $v.redis.waitReplicas) 0) }}
{{- fail "redis.waitReplicas must be null (the services' default) or at least 0" }}
{{- end }}
{{- if or (lt (int $v.redis.waitTimeoutMs) 1) (gt (int $v.redis.waitTimeoutMs) 5000) }}
{{- fail (printf "redis.waitTimeoutMs must be between 1 and 5000, got %d" (int $v.redis.waitTimeoutMs)) }}
{{- end }}
{{- if lt (int $v.presence.replicas) 2 }}
{{- fail (printf "presence.replicas must be at least 2 (presence is replicated), got %d" (int $v.presence.replicas)) }}
{{- end }}
{{- if or (lt (int $v.partitions) 1) (gt (int $v.partitions) 1024) }}
{{- fail (printf "partitions must be between 1 and 1024, got %d" (int $v.partitions)) }}
{{- end }}
{{- $gw := $v.gateway }}
{{- if or (lt (int $gw.wsPort) -1) (eq (int $gw.wsPort) 0) (gt (int $gw.wsPort) 65535) (eq (int $gw.wsPort) (int $gw.port)) }}
{{- fail (printf "gateway.wsPort must be -1 (disabled) or a port other than gateway.port, got %d" (int $gw.wsPort)) }}
{{- end }}
{{- if and $gw.autoscaling.enabled (gt (int $gw.autoscaling.minReplicas) (int $gw.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- /* Variables the chart owns: overriding them through env would break security or wiring. */}}
{{- $reserved := list "PARLEY_ENV" "PARLEY_JWT_KEY" "PARLEY_JWT_KEY_FILE" "PARLEY_JWT_ALGORITHM" "PARLEY_REDIS_URL" "PARLEY_DRAIN_SECONDS" "PARLEY_WS_HOST" "PARLEY_WS_PORT" "PARLEY_ROUTER_ADDR" "PARLEY_PRESENCE_ADDR" "PARLEY_HISTORY_ADDR" "PARLEY_PARTITIONS" "PARLEY_TLS_CERT_FILE" "PARLEY_TLS_KEY_FILE" "PARLEY_PLAINTEXT" "PARLEY_INTERNAL_TLS_CERT_FILE" "PARLEY_INTERNAL_TLS_KEY_FILE" "PARLEY_INTERNAL_CA_FILE" "PARLEY_INTERNAL_INSECURE" "PARLEY_REDIS_USERNAME" "PARLEY_REDIS_PASSWORD" "PARLEY_REDIS_CA_FILE" "PARLEY_CASSANDRA_USERNAME" "PARLEY_CASSANDRA_PASSWORD" "PARLEY_CASSANDRA_TLS" "PARLEY_CASSANDRA_CA_FILE" }}
{{- range $name := splitList " " (include "parley.components" .) }}
{{- $reserved = concat $reserved (list (printf "PARLEY_%s_HOST" (upper $name)) (printf "PARLEY_%s_PORT" (upper $name)) (printf "PARLEY_%s_HEALTH_PORT" (upper $name)) (printf "PARLEY_%s_METRICS_PORT" (upper $name))) }}
{{- end }}
{{- if and $v.tls.edge.enabled (not $v.tls.edge.existingSecret) }}
{{- fail "tls.edge.existingSecret is required: a Secret with the gateway's public certificate (tls.crt, tls.key), e.g. from a cert-manager Certificate; or tls.edge.enabled=false when TLS is terminated in front of the gateway" }}
{{- end }}
{{- $hp := int $v.tls.healthPort }}
{{- if or (lt $hp 1) (gt $hp 65535) (has $hp (list (int $v.gateway.port) (int $v.gateway.wsPort) (int $v.router.port) (int $v.presence.port) (int $v.history.port) (int $v.gateway.metricsPort) (int $v.router.metricsPort) (int $v.presence.metricsPort) (int $v.history.metricsPort))) }}
{{- fail (printf "tls.healthPort must be a port no service uses, got %d" $hp) }}
{{- end }}
{{- if and $v.gateway.ingress.enabled $v.gateway.grpcRoute.enabled }}
{{- fail "gateway.ingress and gateway.grpcRoute are alternatives: enable one" }}
{{- end }}
{{- range $key, $_ := $v.env }}
{{- if has $key $reserved }}
{{- fail (printf "env.%s is set by the chart and cannot be overridden (see values.yaml)" $key) }}
{{- end }}
{{- end }}
{{- range $name := splitList " " (include "parley.components" .) }}
{{- $c := index $v $name }}
{{- range $key, $_ := $c.env }}
{{- if has $key $reserved }}
{{- fail (printf "%s.env.%s is set by the chart and cannot be overridden (see values.yaml)" $name $key) }}
{{- end }}
{{- end }}
{{- if lt (int $c.replicas) 1 }}
{{- fail (printf "%s.replicas must be at least 1" $name) }}
{{- end }}
{{- $drain := include "parley.drainSeconds" (dict "root" $ "component" $name) | float64 }}
{{- $needed := addf $drain $v.preStopSleepSeconds }}
{{- if le (float64 $c.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + drainSeconds (%v): the kubelet would kill the pod mid-drain" $name $c.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Spreading and anti-affinity of a component's pods (defaults unless the component sets its own). */}}
{{- define "parley.scheduling" -}}
{{- $root := .root -}}
{{- $c := index $root.Values .component -}}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $c.affinity }}
affinity:
  {{- toYaml $c.affinity | nindent 2 }}
{{- else if ne $root.Values.podAntiAffinity.mode "none" }}
affinity:
  podAntiAffinity:
    {{- if eq $root.Values.podAntiAffinity.mode "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "parley.selectorLabels" . | nindent 12 }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "parley.selectorLabels" . | nindent 14 }}
    {{- end }}
{{- end }}
{{- if $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $c.topologySpreadConstraints | nindent 2 }}
{{- else if $root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "parley.selectorLabels" $ | nindent 8 }}
    # Spread each rollout's pods on their own, not old and new ones together.
    matchLabelKeys:
      - pod-template-hash
  {{- end }}
{{- end }}
{{- end }}

{{/*
Whether a component's gRPC port speaks TLS (the gateway: edge TLS; the
others: internal mutual TLS); then its probes use the plaintext health port.
*/}}
{{- define "parley.serverTLS" -}}
{{- if eq .component "gateway" }}{{ if .root.Values.tls.edge.enabled }}true{{ end }}
{{- else }}{{ if .root.Values.tls.internal.enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/* The Secret with a component's internal certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "parley.internalSecret" -}}
{{- $name := index .root.Values.tls.internal.secrets .component -}}
{{- default (printf "%s-internal-tls" (include "parley.componentName" .)) $name }}
{{- end }}

{{/* A gRPC probe on the container's gRPC port (grpc.health.v1.Health/Check, service ""). */}}
{{- define "parley.probe" -}}
grpc:
  port: {{ int .port }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
{{- $threshold := .probe.failureThreshold }}
{{- with get . "failureThreshold" }}{{ $threshold = . }}{{ end }}
failureThreshold: {{ $threshold }}
{{- end }}

{{/*
One service's Deployment. Everything that differs between services is here,
keyed on the component name: the gateway alone verifies JWTs and serves the
WebSocket bridge.
*/}}
{{- define "parley.deployment" -}}
{{- $root := .root -}}
{{- $name := .component -}}
{{- $c := index $root.Values $name -}}
{{- $prefix := printf "PARLEY_%s" (upper $name) -}}
{{- $isGateway := eq $name "gateway" -}}
{{- $serverTLS := include "parley.serverTLS" . -}}
{{- $probePort := $c.port -}}
{{- if $serverTLS }}{{ $probePort = $root.Values.tls.healthPort }}{{ end -}}
{{- $autoscaled := false -}}
{{- if $isGateway }}{{ $autoscaled = $c.autoscaling.enabled }}{{ end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "parley.componentName" . }}
  labels:
    {{- include "parley.labels" . | nindent 4 }}
spec:
  {{- if not $autoscaled }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  # Surge first: a rollout never drops below the desired replica count.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "parley.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "parley.selectorLabels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Settings are read once at start: a changed ConfigMap rolls the pods.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if $root.Values.metrics.podAnnotations }}
        # For Prometheus set-ups that discover targets by annotation.
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ int $c.metricsPort | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "parley.serviceAccountName" $root }}
      automountServiceAccountToken: false
      # No Docker-link variables: a Service named "<release>-presence" would
      # otherwise inject PARLEY_PRESENCE_PORT=tcp://... into every pod.
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      # Must exceed preStop + PARLEY_DRAIN_SECONDS (checked at render time).
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      {{- with include "parley.scheduling" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      containers:
        - name: {{ $name }}
          image: {{ include "parley.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["parley-{{ $name }}"]
          ports:
            - name: grpc
              containerPort: {{ int $c.port }}
              protocol: TCP
            # Prometheus /metrics (HTTP).
            - name: metrics
              containerPort: {{ int $c.metricsPort }}
              protocol: TCP
            {{- if and $isGateway (ge (int $c.wsPort) 1) }}
            - name: ws
              containerPort: {{ int $c.wsPort }}
              protocol: TCP
            {{- end }}
            {{- if $serverTLS }}
            - name: health
              containerPort: {{ int $root.Values.tls.healthPort }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "parley.fullname" $root }}
          env:
            # Listen on all interfaces: probes and peers come in on the pod IP.
            - name: {{ $prefix }}_HOST
              value: "0.0.0.0"
            - name: {{ $prefix }}_PORT
              value: {{ int $c.port | quote }}
            - name: {{ $prefix }}_METRICS_PORT
              value: {{ int $c.metricsPort | quote }}
            - name: PARLEY_DRAIN_SECONDS
              value: {{ include "parley.drainSeconds" . | quote }}
            {{- if $serverTLS }}
            # Plaintext, health checks only: the kubelet's gRPC probes cannot speak TLS.
            - name: {{ $prefix }}_HEALTH_PORT
              value: {{ int $root.Values.tls.healthPort | quote }}
            {{- end }}
            {{- if $root.Values.tls.internal.enabled }}
            # This service's identity for internal calls (mutual TLS).
            - name: PARLEY_INTERNAL_TLS_CERT_FILE
              value: /etc/parley/internal-tls/tls.crt
            - name: PARLEY_INTERNAL_TLS_KEY_FILE
              value: /etc/parley/internal-tls/tls.key
            - name: PARLEY_INTERNAL_CA_FILE
              value: /etc/parley/internal-tls/ca.crt
            {{- else }}
            - name: PARLEY_INTERNAL_INSECURE
              value: "true"
            {{- end }}
            {{- if $isGateway }}
            {{- if $root.Values.tls.edge.enabled }}
            - name: PARLEY_TLS_CERT_FILE
              value: /etc/parley/edge-tls/tls.crt
            - name: PARLEY_TLS_KEY_FILE
              value: /etc/parley/edge-tls/tls.key
            {{- else }}
            # TLS is terminated in front of the gateway (tls.edge.enabled=false).
            - name: PARLEY_PLAINTEXT
              value: "true"
            {{- end }}
            {{- end }}
            {{- if $root.Values.redis.existingSecret }}
            - name: PARLEY_REDIS_URL
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.redis.existingSecret }}
                  key: {{ $root.Values.redis.existingSecretKey }}
            {{- end }}
            {{- with $root.Values.redis.usersSecret }}
            # This service's Redis ACL user.
            - name: PARLEY_REDIS_USERNAME
              value: {{ $name }}
            - name: PARLEY_REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $name }}-password
            {{- end }}
            {{- if $root.Values.redis.caSecret }}
            - name: PARLEY_REDIS_CA_FILE
              value: /etc/parley/redis-ca/ca.crt
            {{- end }}
            {{- if eq $name "history" }}
            {{- with $root.Values.cassandra.authSecret }}
            - name: PARLEY_CASSANDRA_USERNAME
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: username
            - name: PARLEY_CASSANDRA_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: password
            {{- end }}
            {{- if or $root.Values.cassandra.tls $root.Values.cassandra.caSecret }}
            - name: PARLEY_CASSANDRA_TLS
              value: "true"
            {{- end }}
            {{- if $root.Values.cassandra.caSecret }}
            - name: PARLEY_CASSANDRA_CA_FILE
              value: /etc/parley/cassandra-ca/ca.crt
            {{- end }}
            {{- end }}
            {{- if $isGateway }}
            # Never the development secret: the key only ever comes from a Secret.
            - name: PARLEY_JWT_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ required "auth.existingSecret is required: the name of an existing Secret holding the JWT verification key (kubectl create secret generic parley-jwt --from-literal=jwt-key=...). The chart never uses the development secret." $root.Values.auth.existingSecret }}
                  key: {{ $root.Values.auth.existingSecretKey }}
            - name: PARLEY_WS_HOST
              value: "0.0.0.0"
            - name: PARLEY_WS_PORT
              value: {{ int $c.wsPort | quote }}
            {{- end }}
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            # Picked up by the OpenTelemetry SDK's resource detector.
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.node.name=$(NODE_NAME),service.instance.id=$(POD_NAME)"
            {{- range $key, $value := $c.env }}
            - name: {{ $key }}
              value: {{ $value | toString | quote }}
            {{- end }}
          # Native gRPC probes call grpc.health.v1.Health/Check. A draining
          # service answers NOT_SERVING: readiness drops it from endpoints
          # (and from the headless Service's DNS) at once.
          startupProbe:
            {{- include "parley.probe" (dict "port" $probePort "probe" $root.Values.probes.startup "failureThreshold" $c.startupFailureThreshold) | nindent 12 }}
          readinessProbe:
            {{- include "parley.probe" (dict "port" $probePort "probe" $root.Values.probes.readiness) | nindent 12 }}
          livenessProbe:
            {{- include "parley.probe" (dict "port" $probePort "probe" $root.Values.probes.liveness) | nindent 12 }}
          {{- if gt (int $root.Values.preStopSleepSeconds) 0 }}
          lifecycle:
            # Endpoint removal races SIGTERM; keep serving a few seconds first.
            preStop:
              exec:
                command: ["sleep", "{{ int $root.Values.preStopSleepSeconds }}"]
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.tls.internal.enabled }}
            - name: internal-tls
              mountPath: /etc/parley/internal-tls
              readOnly: true
            {{- end }}
            {{- if and $isGateway $root.Values.tls.edge.enabled }}
            - name: edge-tls
              mountPath: /etc/parley/edge-tls
              readOnly: true
            {{- end }}
            {{- if $root.Values.redis.caSecret }}
            - name: redis-ca
              mountPath: /etc/parley/redis-ca
              readOnly: true
            {{- end }}
            {{- if and (eq $name "history") $root.Values.cassandra.caSecret }}
            - name: cassandra-ca
              mountPath: /etc/parley/cassandra-ca
              readOnly: true
            {{- end }}
      volumes:
        # The root filesystem is read-only; libraries may still want a scratch dir.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $root.Values.tls.internal.enabled }}
        - name: internal-tls
          secret:
            secretName: {{ include "parley.internalSecret" . }}
            defaultMode: 0440
        {{- end }}
        {{- if and $isGateway $root.Values.tls.edge.enabled }}
        # Mounted as a directory (no subPath), so renewed certificates appear in place.
        - name: edge-tls
          secret:
            secretName: {{ $root.Values.tls.edge.existingSecret }}
            defaultMode: 0440
        {{- end }}
        {{- with $root.Values.redis.caSecret }}
        - name: redis-ca
          secret:
            secretName: {{ . }}
        {{- end }}
        {{- if and (eq $name "history") $root.Values.cassandra.caSecret }}
        - name: cassandra-ca
          secret:
            secretName: {{ $root.Values.cassandra.caSecret }}
        {{- end }}
{{- end }}

{{/*
The headless Service of an internal component: DNS returns every ready pod,
and gRPC clients balance over them (see parley.addr).
*/}}
{{- define "parley.headlessService" -}}
{{- $c := index .root.Values .component -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "parley.componentName" . }}
  labels:
    {{- include "parley.labels" . | nindent 4 }}
spec:
  clusterIP: None
  # Only ready pods are published, so a draining pod leaves DNS.
  publishNotReadyAddresses: false
  selector:
    {{- include "parley.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ int $c.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: {{ ternary "https" "kubernetes.io/h2c" .root.Values.tls.internal.enabled }}
{{- end }}

{{- define "parley.pdb" -}}
{{- $c := index .root.Values .component -}}
{{- if $c.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "parley.componentName" . }}
  labels:
    {{- include "parley.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $c.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "parley.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
