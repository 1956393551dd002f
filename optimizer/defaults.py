"""The defaults of the systems gpumix drives, defined once. Every module that needs one imports it from here,
so the planner, the service, `render`, `lint` and the emulator cannot disagree about them.

Each value is what the upstream code does when the field is absent (file and function cited).
"""

from __future__ import annotations

# kube-controller-manager --horizontal-pod-autoscaler-tolerance (pkg/controller/podautoscaler/config/v1alpha1/
# defaults.go, RecommendedDefaultHPAControllerConfiguration): the dead band |ratio − 1| within which the HPA
# keeps the current count, in both directions unless behavior.scaleUp/scaleDown.tolerance is in force.
DEFAULT_TOLERANCE = 0.1

# --horizontal-pod-autoscaler-downscale-stabilization (same file), and what the API server defaults
# behavior.scaleDown.stabilizationWindowSeconds to (pkg/apis/autoscaling/v2/defaults.go,
# SetDefaults_HorizontalPodAutoscalerBehavior; horizontal.go maybeInitScaleDownStabilizationWindow).
DEFAULT_SCALE_DOWN_WINDOW_S = 300.0

# --horizontal-pod-autoscaler-sync-period: the HPA reconciles (and reads KEDA's metric) this often.
HPA_SYNC_PERIOD_S = 15.0

# KEDA (apis/keda/v1alpha1/scaledobject_types.go, defaultHPAMaxReplicas / GetHPAMaxReplicas): a
# ScaledObject without maxReplicaCount gets an HPA with maxReplicas 100.
KEDA_DEFAULT_MAX_REPLICAS = 100

# KEDA's pollingInterval (apis/keda/v1alpha1/withtriggers_types.go, defaultPollingInterval), cooldownPeriod
# and initialCooldownPeriod (pkg/scaling/executor/scale_executor.go, defaultCooldownPeriod and
# defaultInitialCooldownPeriod).
KEDA_DEFAULT_POLLING_INTERVAL_S = 30.0
KEDA_DEFAULT_COOLDOWN_PERIOD_S = 300.0
KEDA_DEFAULT_INITIAL_COOLDOWN_PERIOD_S = 0.0

# KEDA's external scaler gRPC deadline is the global HTTP timeout (KEDA_HTTP_DEFAULT_TIMEOUT, 3000 ms).
KEDA_GRPC_TIMEOUT_S = 3.0

# pkg/scalers/external_scaler.go runStreamIsActive: retry after 2 s, doubling to at most one minute.
KEDA_STREAM_BACKOFF_START_S = 2.0
KEDA_STREAM_BACKOFF_MAX_S = 60.0
