//! Convolutions of CUDA tensors through cuDNN (the `cudnn` feature), run as PyTorch runs them:
//! f16 and bf16 data accumulated in f32 on tensor cores (cuDNN's pseudo-half configuration;
//! f32 data in plain f32), NCHW in and out, with no im2col buffer. What each shape needs —
//! descriptors, the algorithm cuDNN's heuristics pick, its workspace size — is worked out once
//! and kept, and one workspace per device is kept and grown. (candle's own cuDNN path builds
//! the descriptors, asks the heuristics and allocates a zeroed workspace on every call, and
//! accumulates f16 in f16.)

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{
    ConvDescriptor, ConvForward, Cudnn, CudnnDataType, FilterDescriptor, TensorDescriptor, sys,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, WithDType};

/// A 2D convolution (groups 1, dilation 1) of a CUDA input `(n, c_in, h, w)` by a weight
/// `(c_out, c_in, k_h, k_w)`, both contiguous.
pub struct CudnnConv {
    /// Zero padding on every side.
    pub padding: usize,
    /// The stride along both axes.
    pub stride: usize,
}

/// What identifies a convolution to cuDNN.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    dtype: DType,
    input: [usize; 4],
    weight: [usize; 4],
    padding: usize,
    stride: usize,
}

/// The descriptors and algorithm of one convolution shape.
struct Plan<T: CudnnDataType> {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
    algorithm: sys::cudnnConvolutionFwdAlgo_t,
    workspace_bytes: usize,
}

/// Per thread (cuDNN handles are neither `Send` nor `Sync`), per device: the handle, the
/// workspace, and every shape's plan.
#[derive(Default)]
struct State {
    handles: HashMap<DeviceId, Arc<Cudnn>>,
    workspaces: HashMap<DeviceId, CudaSlice<u8>>,
    plans: HashMap<Key, Box<dyn Any>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn dims4(layout: &Layout, what: &str) -> Result<[usize; 4]> {
    match layout.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        dims => candle_core::bail!("cuDNN convolution: the {what} is {dims:?}, not 4-D"),
    }
}

fn int(value: usize) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| candle_core::Error::Msg(format!("cuDNN convolution: {value} is too large")))
}

impl CudnnConv {
    fn run<T>(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        w: &CudaStorage,
        w_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)>
    where
        T: CudaDType + CudnnDataType + DeviceRepr + WithDType,
    {
        if !x_layout.is_contiguous() || !w_layout.is_contiguous() {
            candle_core::bail!("cuDNN convolution: the input and weight must be contiguous");
        }
        let input = dims4(x_layout, "input")?;
        let weight = dims4(w_layout, "weight")?;
        let [n, c_in, h, w_in] = input;
        let [c_out, w_c_in, k_h, k_w] = weight;
        if c_in != w_c_in {
            candle_core::bail!(
                "cuDNN convolution: {c_in} input channels but the weight takes {w_c_in}"
            );
        }
        let (h_pad, w_pad) = (h + 2 * self.padding, w_in + 2 * self.padding);
        if h_pad < k_h || w_pad < k_w || self.stride == 0 {
            candle_core::bail!(
                "cuDNN convolution: a {h}×{w_in} input (padding {}) is smaller than the {k_h}×{k_w} kernel",
                self.padding
            );
        }
        let (h_out, w_out) = (
            (h_pad - k_h) / self.stride + 1,
            (w_pad - k_w) / self.stride + 1,
        );
        let device: CudaDevice = x.device().clone();
        let key = Key {
            device: device.id(),
            dtype: T::DTYPE,
            input,
            weight,
            padding: self.padding,
            stride: self.stride,
        };
        let x_view = x.as_cuda_slice::<T>()?.slice(x_layout.start_offset()..);
        let w_view = w.as_cuda_slice::<T>()?.slice(w_layout.start_offset()..);
        // SAFETY: cuDNN writes every element of `y` (beta is 0, so none is read first).
        let mut y = unsafe { device.alloc::<T>(n * c_out * h_out * w_out)? };
        STATE.with(|state| -> Result<()> {
            let mut state = state.borrow_mut();
            let state = &mut *state;
            let cudnn = match state.handles.get(&key.device) {
                Some(cudnn) => cudnn.clone(),
                None => {
                    let cudnn = Cudnn::new(device.cuda_stream())?;
                    state.handles.insert(key.device, cudnn.clone());
                    cudnn
                }
            };
            let plan = match state.plans.entry(key) {
                Entry::Occupied(plan) => plan.into_mut(),
                Entry::Vacant(entry) => {
                    let plan = self.plan::<T>(&cudnn, input, weight, [n, c_out, h_out, w_out])?;
                    tracing::debug!(
                        ?input,
                        ?weight,
                        algorithm = ?plan.algorithm,
                        workspace = plan.workspace_bytes,
                        "a cuDNN convolution plan"
                    );
                    entry.insert(Box::new(plan))
                }
            };
            let plan = plan
                .downcast_ref::<Plan<T>>()
                .ok_or_else(|| candle_core::Error::Msg("cuDNN convolution: no plan".into()))?;
            let workspace = match state.workspaces.remove(&key.device) {
                Some(workspace) if workspace.len() >= plan.workspace_bytes => workspace,
                // SAFETY: scratch space; cuDNN reads nothing from it it has not written.
                _ => unsafe { device.alloc::<u8>(plan.workspace_bytes.max(1))? },
            };
            let workspace = state.workspaces.entry(key.device).or_insert(workspace);
            let forward = ConvForward {
                conv: &plan.conv,
                x: &plan.x,
                w: &plan.w,
                y: &plan.y,
            };
            // SAFETY: the descriptors were made for these shapes and this dtype, the views
            // start at the tensors' offsets and hold them whole (contiguous), and the
            // workspace holds at least the bytes cuDNN asked for.
            unsafe {
                forward.launch(
                    plan.algorithm,
                    Some(workspace),
                    (T::from_f64(1.0), T::from_f64(0.0)),
                    &x_view,
                    &w_view,
                    &mut y,
                )?;
            }
            Ok(())
        })?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, device),
            Shape::from((n, c_out, h_out, w_out)),
        ))
    }

    /// The descriptors of one shape and the algorithm cuDNN's heuristics rank first for it.
    fn plan<T: CudnnDataType + WithDType>(
        &self,
        cudnn: &Arc<Cudnn>,
        input: [usize; 4],
        weight: [usize; 4],
        output: [usize; 4],
    ) -> Result<Plan<T>> {
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let four = |dims: [usize; 4]| -> Result<[i32; 4]> {
            Ok([int(dims[0])?, int(dims[1])?, int(dims[2])?, int(dims[3])?])
        };
        let (padding, stride) = (int(self.padding)?, int(self.stride)?);
        let mut conv = cudnn.create_conv2d::<f32>(
            [padding, padding],
            [stride, stride],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_math_type(if T::DTYPE == DType::F32 {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        })?;
        let x = cudnn.create_4d_tensor::<T>(nchw, four(input)?)?;
        let w = cudnn.create_4d_filter::<T>(nchw, four(weight)?)?;
        let y = cudnn.create_4d_tensor::<T>(nchw, four(output)?)?;
        let forward = ConvForward {
            conv: &conv,
            x: &x,
            w: &w,
            y: &y,
        };
        let algorithm = forward.pick_algorithm()?;
        let workspace_bytes = forward.get_workspace_size(algorithm)?;
        Ok(Plan {
            conv,
            x,
            w,
            y,
            algorithm,
            workspace_bytes,
        })
    }
}

impl CustomOp2 for CudnnConv {
    fn name(&self) -> &'static str {
        "autonomy-cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("cuDNN convolution of a CPU tensor")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        w: &CudaStorage,
        w_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match x.dtype() {
            DType::F16 => self.run::<half::f16>(x, x_layout, w, w_layout),
            DType::BF16 => self.run::<half::bf16>(x, x_layout, w, w_layout),
            DType::F32 => self.run::<f32>(x, x_layout, w, w_layout),
            other => candle_core::bail!("cuDNN convolution of {other:?} tensors"),
        }
    }
}
