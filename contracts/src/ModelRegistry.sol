// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {RevenueSplitter} from "./RevenueSplitter.sol";

/// @title ModelRegistry
/// @notice Generative models, their versions (weights, dataset, lineage, contributors' shares) and the sale
/// of access to a version, paid in Auton into the version's split.
/// @dev The contract owner is governance (the timelock). A model is either private (its registrant adds
/// versions, activates them and prices them) or community (after its registrant's first version, anyone
/// may add a version; only governance activates or prices one). A model's first version becomes active
/// when it is added; after that a community model's active version changes only through governance.
/// The registry deploys its {RevenueSplitter}, which reads the contributors' shares from here.
contract ModelRegistry is Ownable {
    using SafeERC20 for IERC20;

    /// @notice A payee of a version and its share of the version's revenue.
    struct Contributor {
        address account;
        uint16 sharesBps;
    }

    /// @notice A model: `owner` is its registrant (and controller when private).
    struct Model {
        address owner;
        bool community;
        uint64 activeVersion;
        string name;
    }

    /// @notice A model version. Ids are global across models and start at 1.
    struct Version {
        uint64 modelId;
        uint64 parentVersion;
        uint128 accessPrice;
        bytes32 weightsHash;
        bytes32 datasetManifestHash;
        string uri;
        Contributor[] contributors;
    }

    /// @notice Contributors' shares of a version always add up to this.
    uint256 public constant TOTAL_SHARES_BPS = 10_000;
    /// @notice Most contributors a version may list.
    uint256 public constant MAX_CONTRIBUTORS = 100;

    /// @notice The Auton token access is paid in.
    IERC20 public immutable token;
    /// @notice The splitter holding every version's revenue, deployed by this registry.
    RevenueSplitter public immutable splitter;

    /// @notice Number of models registered; the last model id.
    uint256 public modelCount;
    /// @notice Number of versions added; the last version id.
    uint256 public versionCount;

    mapping(uint256 modelId => Model) private _models;
    mapping(uint256 versionId => Version) private _versions;
    mapping(uint256 versionId => mapping(address account => uint256 sharesBps)) private _shares;
    mapping(uint256 versionId => mapping(address account => bool)) private _access;

    /// @notice A model was registered.
    event ModelRegistered(uint256 indexed modelId, address indexed owner, bool community, string name);
    /// @notice A version was added to a model.
    event VersionAdded(
        uint256 indexed versionId,
        uint256 indexed modelId,
        uint256 indexed parentVersion,
        bytes32 weightsHash,
        bytes32 datasetManifestHash,
        string uri,
        Contributor[] contributors,
        uint256 accessPrice
    );
    /// @notice A model's active version changed.
    event ActiveVersionChanged(uint256 indexed modelId, uint256 previousVersion, uint256 indexed versionId);
    /// @notice A version's access price changed.
    event AccessPriceChanged(uint256 indexed versionId, uint256 price);
    /// @notice `account` bought access to a version.
    event AccessPurchased(uint256 indexed versionId, address indexed account, uint256 price);

    /// @notice No model has this id.
    error UnknownModel(uint256 modelId);
    /// @notice No version has this id.
    error UnknownVersion(uint256 versionId);
    /// @notice `caller` may not change this model.
    error NotModelController(uint256 modelId, address caller);
    /// @notice The version belongs to another model.
    error VersionNotOfModel(uint256 versionId, uint256 modelId);
    /// @notice A version needs between 1 and {MAX_CONTRIBUTORS} contributors.
    error InvalidContributorCount(uint256 count);
    /// @notice A contributor is the zero address, listed twice, or has a zero share.
    error InvalidContributor(address account);
    /// @notice Contributors' shares do not add up to {TOTAL_SHARES_BPS}.
    error SharesNotTotal(uint256 totalBps);
    /// @notice The version's access price is zero: access is free.
    error AccessIsFree(uint256 versionId);
    /// @notice The account already has access to the version.
    error AlreadyHasAccess(uint256 versionId, address account);

    /// @param token_ The Auton token.
    /// @param governance The timelock: owner of this registry.
    constructor(IERC20 token_, address governance) Ownable(governance) {
        token = token_;
        splitter = new RevenueSplitter(token_, this);
        token_.forceApprove(address(splitter), type(uint256).max);
    }

    /// @notice Registers a model owned by the caller.
    /// @param name Human-readable name.
    /// @param community Whether governance controls the model's active version and prices.
    /// @return modelId The new model's id.
    function registerModel(string calldata name, bool community) external returns (uint256 modelId) {
        modelId = ++modelCount;
        Model storage model = _models[modelId];
        model.owner = msg.sender;
        model.community = community;
        model.name = name;
        emit ModelRegistered(modelId, msg.sender, community, name);
    }

    /// @notice Adds a version to a model: by its owner for a private model; for a community model, the
    /// first version by its owner (it becomes active at once), later ones by anyone. A model's first
    /// version becomes its active version.
    /// @param modelId The model.
    /// @param weightsHash sha256 of the weights file.
    /// @param datasetManifestHash sha256 of the training dataset's manifest.
    /// @param parentVersion The version this one was derived from (any model's), or 0.
    /// @param uri Where the weights can be fetched.
    /// @param contributors Payees and their shares, adding up to {TOTAL_SHARES_BPS}. The first one also
    /// receives the splitter's rounding remainder.
    /// @param accessPrice Price of access in Auton wei; 0 means free.
    /// @return versionId The new version's id.
    function addVersion(
        uint256 modelId,
        bytes32 weightsHash,
        bytes32 datasetManifestHash,
        uint256 parentVersion,
        string calldata uri,
        Contributor[] calldata contributors,
        uint256 accessPrice
    ) external returns (uint256 versionId) {
        Model storage model = _model(modelId);
        if (msg.sender != model.owner && (!model.community || model.activeVersion == 0)) {
            revert NotModelController(modelId, msg.sender);
        }
        if (parentVersion != 0) _version(parentVersion);
        if (contributors.length == 0 || contributors.length > MAX_CONTRIBUTORS) {
            revert InvalidContributorCount(contributors.length);
        }

        versionId = ++versionCount;
        Version storage version = _versions[versionId];
        version.modelId = uint64(modelId);
        version.parentVersion = uint64(parentVersion);
        version.accessPrice = SafeCast.toUint128(accessPrice);
        version.weightsHash = weightsHash;
        version.datasetManifestHash = datasetManifestHash;
        version.uri = uri;

        uint256 total;
        for (uint256 i; i < contributors.length; ++i) {
            Contributor calldata c = contributors[i];
            if (c.account == address(0) || c.sharesBps == 0 || _shares[versionId][c.account] != 0) {
                revert InvalidContributor(c.account);
            }
            _shares[versionId][c.account] = c.sharesBps;
            version.contributors.push(c);
            total += c.sharesBps;
        }
        if (total != TOTAL_SHARES_BPS) revert SharesNotTotal(total);

        emit VersionAdded(
            versionId, modelId, parentVersion, weightsHash, datasetManifestHash, uri, contributors, accessPrice
        );
        if (model.activeVersion == 0) _activate(model, modelId, versionId);
    }

    /// @notice Makes `versionId` the model's active version: governance only for a community model, the
    /// model's owner for a private one.
    /// @param modelId The model.
    /// @param versionId One of the model's versions.
    function setActiveVersion(uint256 modelId, uint256 versionId) external {
        Model storage model = _model(modelId);
        _checkController(model, modelId);
        if (_version(versionId).modelId != modelId) revert VersionNotOfModel(versionId, modelId);
        _activate(model, modelId, versionId);
    }

    /// @notice Sets a version's access price (0 = free), with the same authority as {setActiveVersion}.
    /// @param versionId The version.
    /// @param price Price in Auton wei.
    function setAccessPrice(uint256 versionId, uint256 price) external {
        Version storage version = _version(versionId);
        _checkController(_models[version.modelId], version.modelId);
        version.accessPrice = SafeCast.toUint128(price);
        emit AccessPriceChanged(versionId, price);
    }

    /// @notice Buys the caller access to a version; the price (pulled with `transferFrom`, so approve this
    /// registry first) goes into the version's split.
    /// @param versionId The version.
    function buyAccess(uint256 versionId) external {
        uint256 price = _version(versionId).accessPrice;
        if (price == 0) revert AccessIsFree(versionId);
        if (_access[versionId][msg.sender]) revert AlreadyHasAccess(versionId, msg.sender);
        _access[versionId][msg.sender] = true;
        emit AccessPurchased(versionId, msg.sender, price);
        token.safeTransferFrom(msg.sender, address(this), price);
        splitter.deposit(versionId, price);
    }

    /// @notice A model's record.
    function modelOf(uint256 modelId) external view returns (Model memory) {
        return _model(modelId);
    }

    /// @notice A version's record, contributors included.
    function versionOf(uint256 versionId) external view returns (Version memory) {
        return _version(versionId);
    }

    /// @notice A model's active version (0 before its first version).
    function activeVersion(uint256 modelId) external view returns (uint256) {
        return _model(modelId).activeVersion;
    }

    /// @notice Whether a version with this id exists.
    function versionExists(uint256 versionId) public view returns (bool) {
        return versionId != 0 && versionId <= versionCount;
    }

    /// @notice `account`'s share of a version's revenue, and whether it also receives the rounding
    /// remainder (the version's first contributor does). Zero for a non-contributor or unknown version.
    function shareOf(uint256 versionId, address account) external view returns (uint256 sharesBps, bool residual) {
        sharesBps = _shares[versionId][account];
        residual = sharesBps != 0 && _versions[versionId].contributors[0].account == account;
    }

    /// @notice Whether `account` may use a version: the version is free or `account` bought access.
    function hasAccess(address account, uint256 versionId) external view returns (bool) {
        return _version(versionId).accessPrice == 0 || _access[versionId][account];
    }

    function _activate(Model storage model, uint256 modelId, uint256 versionId) private {
        emit ActiveVersionChanged(modelId, model.activeVersion, versionId);
        model.activeVersion = uint64(versionId);
    }

    function _checkController(Model storage model, uint256 modelId) private view {
        if (msg.sender != (model.community ? owner() : model.owner)) revert NotModelController(modelId, msg.sender);
    }

    function _model(uint256 modelId) private view returns (Model storage model) {
        model = _models[modelId];
        if (model.owner == address(0)) revert UnknownModel(modelId);
    }

    function _version(uint256 versionId) private view returns (Version storage) {
        if (!versionExists(versionId)) revert UnknownVersion(versionId);
        return _versions[versionId];
    }
}
